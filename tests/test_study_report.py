"""The paper-ready report of a study: Markdown and LaTeX tables with the numbers scipy and
statsmodels give, the forest plot as PNG and SVG, the verdict (provisional while runs are
missing), `study report ID --out DIR`, and a Studies page that loads no plotting library."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cnn_ablation.config import RunConfig
from cnn_ablation.studies import grid as study_grid
from cnn_ablation.studies import report as study_report
from cnn_ablation.studies import results as study_results
from cnn_ablation.studies.spec import StudySpec
from tests.support import ROOT

BASE = RunConfig(dataset="synthetic:100", epochs=1, batch_size=16)
SPEC = StudySpec(BASE, {"bn_conv_2": (True, False), "dropout": (0.5, 0.0)}, "full", seeds=3)


def stored_study(engine, make_run, name="report & 100 % of_it", skip=()):
    """SPEC with noisy completed runs (one (cell, seed) left queued per `skip`); returns the
    view and {(cell, seed): value}."""
    rng = np.random.default_rng(31)
    shift = rng.normal(0, 0.01, 3)
    values = {}
    for cell, config in SPEC.runs():
        key = (cell.label, config.seed)
        if key in skip:
            make_run(config, "queued")
            continue
        bn, dropout = cell.levels["bn_conv_2"], cell.levels["dropout"]
        value = round(0.7 - (0 if bn else 0.04) + (0.01 if dropout == 0.0 else 0)
                      + shift[config.seed] + rng.normal(0, 0.003), 6)
        make_run(config, "completed", accuracies=[value + 0.05])
        values[key] = value
    study_id = study_grid.create(engine, SPEC, name)[0]
    return study_grid.load(engine, study_id), values


def test_tables_state_each_cell_and_its_difference_to_the_base_as_scipy_gives_it(engine,
                                                                                  make_run):
    view, values = stored_study(engine, make_run)
    result = study_results.results(engine, view)
    base = "bn_conv_2=on, dropout=0.5"
    others = [c.label for c in SPEC.cells() if c.label != base]
    a = np.array([values[(base, s)] for s in range(3)])
    tests = {c: stats.ttest_rel(np.array([values[(c, s)] for s in range(3)]), a) for c in others}
    md = study_report.markdown(view, result, "study-1-forest.png")
    tex = study_report.latex(view, result)
    for cell in others:
        x = np.array([values[(cell, s)] for s in range(3)])
        ci = tests[cell].confidence_interval(0.95)
        delta = f"{100 * (x - a).mean():+.1f} pp [{100 * ci.low:+.1f}, {100 * ci.high:+.1f}]"
        mean = f"{100 * x.mean():.1f} ± {100 * x.std(ddof=1):.1f} %"
        mark = ""  # a factorial design's cells vs the base: numbers, the verdicts are the effects'
        assert f"| {cell} | {mean} | {delta} | {mark} | 3 |" in md
        row = " & ".join(study_report.latex_escape(v, numbers=v != cell)
                         for v in (cell, mean, delta, mark, "3"))
        assert row + r" \\" in tex
    assert f"| {base} |" in md and "| base |" in md
    assert "## Main effects" in md and "## Verdict" in md and "![Forest plot" in md
    assert "Holm's adjustment at 5 % over all 3 verdicts of the study" in md
    assert "## Interactions" in md and "| bn_conv_2 × dropout |" in md
    # LaTeX: booktabs, everything escaped (the study's name has &, % and _)
    assert r"\toprule" in tex and r"\begin{tabular}{lrrcr}" in tex
    assert r"report \& 100 \% of\_it" in tex and r"bn\_conv\_2=off, dropout=0" in tex
    assert tex.count(r"\begin{table}") == 3  # cells, main effects, interactions
    x = np.array([values[("bn_conv_2=off, dropout=0", s)] for s in range(3)])
    ci = tests["bn_conv_2=off, dropout=0"].confidence_interval(0.95)
    expected = (f"{100 * x.mean():.1f} $\\pm$ {100 * x.std(ddof=1):.1f} \\% & "
                f"{100 * (x - a).mean():+.1f} pp [{100 * ci.low:+.1f}, {100 * ci.high:+.1f}]")
    assert expected.replace("-", "$-$") in tex


def test_main_effects_and_the_interaction_are_one_holm_family_in_the_report(engine, make_run):
    """The two main effects and the interaction of the 2x2 are three hypotheses: their Holm
    marks come from one adjustment over all three p-values (scipy t-tests on the per-seed
    contrasts, statsmodels' Holm), in the Markdown tables and in the words."""
    view, values = stored_study(engine, make_run)
    result = study_results.results(engine, view)

    def cell(bn, dropout):
        return np.array([values[(f"bn_conv_2={'on' if bn else 'off'}, dropout={dropout}", s)]
                         for s in range(3)])

    bn_main = (cell(False, "0.5") + cell(False, "0")) / 2 - (cell(True, "0.5") + cell(True, "0")) / 2
    drop_main = (cell(True, "0") + cell(False, "0")) / 2 - (cell(True, "0.5") + cell(False, "0.5")) / 2
    inter = (cell(False, "0") - cell(False, "0.5")) - (cell(True, "0") - cell(True, "0.5"))
    raw = [stats.ttest_1samp(x, 0).pvalue for x in (bn_main, drop_main, inter)]
    reject, adjusted, _, _ = multipletests(raw, method="holm")
    effects = result["effects"].set_index("factor")
    assert effects.loc["bn_conv_2", "p_holm"] == pytest.approx(adjusted[0], rel=1e-9)
    assert effects.loc["dropout", "p_holm"] == pytest.approx(adjusted[1], rel=1e-9)
    assert result["interactions"]["p_holm"].iloc[0] == pytest.approx(adjusted[2], rel=1e-9)
    md = study_report.markdown(view, result)
    marks = {r["effect"]: r["holm"] for r in study_report.effect_rows(result)}
    marks.update({r["effect"]: r["holm"] for r in study_report.interaction_rows(result)})
    assert marks == {"bn_conv_2 (on → off)": "*" if reject[0] else "",
                     "dropout (0.5 → 0)": "*" if reject[1] else "",
                     "bn_conv_2 × dropout": "*" if reject[2] else ""}
    assert "bn_conv_2 × dropout (interaction)" in md  # the verdict names the interaction too


def test_forest_plot_png_and_svg_show_every_effect(engine, make_run):
    view, _ = stored_study(engine, make_run)
    result = study_results.results(engine, view)
    png = study_report.forest_plot(view, result, "png")
    svg = study_report.forest_plot(view, result, "svg")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    text = svg.decode()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "bn_conv_2 (on → off)" in text and "dropout (0.5 → 0)" in text
    assert svg == study_report.forest_plot(view, result, "svg")  # the same study, the same file


def test_a_provisional_report_says_so_and_gives_no_verdict(engine, make_run):
    view, _ = stored_study(engine, make_run, skip={("bn_conv_2=off, dropout=0", 2)})
    result = study_results.results(engine, view)
    md = study_report.markdown(view, result)
    assert "provisional: 11 of 12 runs" in md and "PROVISIONAL: 11 of 12 runs" in md
    assert study_report.verdict(result).startswith("Provisional: 11 of 12 runs.")
    assert "*" not in "".join(r["holm"] for r in study_report.cell_rows(result))
    for claim in ("lowered", "raised", "beyond noise"):
        assert claim not in study_report.verdict(result)
    svg = study_report.forest_plot(view, result, "svg").decode()
    assert "provisional: 11 of 12 runs" in svg


def test_study_report_command_writes_tables_plot_and_verdict(engine, make_run, cli, tmp_path):
    view, _ = stored_study(engine, make_run)
    out = cli("study", "report", str(view.id), "--out", str(tmp_path / "paper"))
    assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in (tmp_path / "paper").iterdir())
    stem = f"study-{view.id}"
    assert names == sorted([f"{stem}-report.md", f"{stem}-table.tex", f"{stem}-forest.png",
                            f"{stem}-forest.svg", f"{stem}-verdict.txt"])
    assert "complete: 12 of 12 runs" in out.stdout
    verdict = (tmp_path / "paper" / f"{stem}-verdict.txt").read_text()
    assert "bn_conv_2 (on → off) lowered final val acc" in verdict
    assert "Holm-adjusted at 5 % over all 3 of them" in verdict


@pytest.mark.slow  # a fresh interpreter renders the page
def test_the_studies_page_loads_neither_tensorflow_nor_matplotlib(engine, make_run):
    stored_study(engine, make_run)
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(ROOT / "app.py")!r}, default_timeout=60).run()
at.switch_page("cnn_ablation/ui/studies.py").run()
assert not at.exception, at.exception
assert [b.label for b in at.get("download_button")][:4] == [
    "Report (Markdown)", "Table (LaTeX)", "Forest plot (PNG)", "Forest plot (SVG)"]
print(sorted(m for m in ("tensorflow", "keras", "matplotlib") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_an_out_folder_that_cannot_be_written_is_refused_in_one_line(engine, make_run, cli,
                                                                     tmp_path):
    view, _ = stored_study(engine, make_run)
    taken = tmp_path / "a-file"
    taken.write_text("not a folder")
    for command, out in (("report", str(taken)), ("export", "/proc/x")):
        refused = cli("study", command, str(view.id), "--out", out)
        assert refused.returncode == 2, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: out: '{out}' is not allowed; "
                                                       "allowed: a folder this user can write")
        assert "Traceback" not in refused.stderr
