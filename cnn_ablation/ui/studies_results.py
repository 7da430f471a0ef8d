"""The Studies page's results of one study: its progress and grid of cells x seeds, the buttons
(fill missing, re-run failed, cancel, delete), per-cell mean ± spread, effects with 95 % intervals
and Holm-adjusted verdicts, seeds needed for a chosen effect size, interactions, the curves per
cell and the report files. Only functions: nothing runs at import."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from cnn_ablation.config import METRICS
from cnn_ablation.run_report import csv_text
from cnn_ablation.storage import polling
from cnn_ablation.storage.curves import epochs_frame
from cnn_ablation.studies import estimate as study_estimate
from cnn_ablation.studies import estimators, words
from cnn_ablation.studies import grid as study_grid
from cnn_ablation.studies import rounds as study_rounds
from cnn_ablation.studies.presets import CHAPTER_TEST_ACCURACY
from cnn_ablation.studies.results import results
from cnn_ablation.studies.saved_results import saved
from cnn_ablation.studies.spec import StudyView
from cnn_ablation.ui import preload, studies_state
from cnn_ablation.ui.common import _engine, database_key, plain
from cnn_ablation.ui.figures import band_figure

CURVES_HEIGHT = 360  # the band figure's height: the placeholder keeps the page still


@st.cache_data(max_entries=16, show_spinner=False)
def study_results(url: str, study_id: int, spec_json: str, fingerprint: tuple, metric: str,
                  power_pp: float) -> dict:
    """`studies.results.results`, shared by every session while the study's runs stay as they are
    (`fingerprint`: polling.runs_fingerprint, one indexed query per refresh): a 96-cell
    study takes seconds to analyse, a refresh that finds nothing new takes milliseconds. Behind
    it, the same results on disk (studies.saved_results) for a new server process."""
    engine = _engine(url)
    return saved((study_id, spec_json, fingerprint, metric, power_pp), lambda: results(
        engine, study_grid.load(engine, study_id), metric, power_pp=power_pp))


MAX_BANDS = 8  # more bands than this on one chart hide each other


def curve_cells(result: dict) -> list[str]:
    """The cells whose curves are drawn: all of them in a small study; in a larger one the base
    and the cells that moved the result most (|Δ vs base|), which the user can change."""
    summary = result["summary"]
    cells = summary["cell"].tolist()
    if len(cells) <= MAX_BANDS:
        return cells
    base = result["base_cell"]
    moved = summary[summary["cell"] != base].assign(
        size=pd.to_numeric(summary["delta"], errors="coerce").abs()).sort_values(
        "size", ascending=False, na_position="last")
    default = [base, *moved["cell"].head(MAX_BANDS - 1)]
    return st.multiselect(f"Cells drawn (the base and the {MAX_BANDS - 1} that moved the result "
                          f"most, of {len(cells)})", cells, default=default,
                          key="study_curve_cells")


def report_file(view: StudyView, result: dict, kind: str) -> Callable[[], bytes]:
    """The report file `kind` (markdown, latex, png, svg), made when its button is clicked:
    Matplotlib is loaded then, not with the page."""

    def make() -> bytes:
        from cnn_ablation.studies import report as study_report

        if kind in ("png", "svg"):
            return study_report.forest_plot(view, result, kind)
        if kind == "latex":
            return study_report.latex(view, result).encode()
        return study_report.markdown(view, result, study_report.file_names(view.id)["png"]).encode()

    return make


def control_buttons(engine: Engine, view: StudyView) -> None:
    b1, b2, b3, b4, _ = st.columns([1, 1, 1, 1, 2])
    if b1.button("Fill missing", key="fill", help="Queue cells/seeds never run; completed "
                                                "runs with the same config count"):
        queued = study_grid.fill_missing(engine, view.id)
        st.toast(f"Queued {len(queued)} runs")
    if b2.button("Re-run failed", key="rerun", help="Queue again cells/seeds whose runs all "
                                                   "failed, diverged or were cancelled"):
        queued = study_grid.rerun_failed(engine, view.id)
        st.toast(f"Queued {len(queued)} runs")
    with b3.popover("Cancel study"):
        st.markdown("Queued runs of this study are cancelled at once; running ones stop after "
                    "their current epoch (kept). An adaptive study adds no more rounds.")
        now = st.checkbox("Stop running runs at once (their partial epoch is not kept)",
                          key="cancel_now")
        if st.button(f"Cancel study #{view.id}", key="cancel_confirm", type="primary"):
            outcome = study_grid.cancel(engine, view.id, now=now)
            st.toast(f"Cancelled {len(outcome.cancelled)} queued run(s); "
                     f"{len(outcome.stopping)} running run(s) stopping")
    with b4.popover("Delete study"):
        st.markdown(f"Deletes study #{view.id}. Its runs are kept (as single runs) unless you "
                    "tick the box.")
        with_runs = st.checkbox("Also delete the runs this study queued", key="delete_with_runs")
        if st.button(f"Delete study #{view.id}", key="delete_confirm", type="primary"):
            try:
                study_grid.delete(engine, view.id, with_runs=with_runs)
            except ValueError as exc:
                st.error(plain(exc))
            else:
                studies_state.forget_deleted(view.id)
                st.rerun(scope="app")


def show_study(engine: Engine, study_id: int, adaptive_going: bool, charts: bool = True) -> None:
    """Study `study_id` as it stands (the page runs it as a fragment that refreshes while runs
    are active); with `adaptive_going`, its next round is queued first if this one is done.
    `charts` False: the page holds what follows the effects (seeds needed, interactions,
    curves, report files) until the browser has drawn the tables (preload.py); a placeholder
    stands there, asking again every second."""
    if adaptive_going:
        study_rounds.advance(engine)  # queue the next round if this one is done
    view = study_grid.load(engine, study_id)
    primary = view.spec.metric
    metric_key, power_key = f"study_metric_{view.id}", f"study_power_pp_{view.id}"
    metric = st.session_state.get(metric_key, primary)
    power_pp = float(st.session_state.get(power_key, 100 * view.spec.smallest_effect))
    fingerprint = polling.runs_fingerprint(
        engine, [c.config_hash for _, c in view.spec.runs()])
    result = study_results(database_key(engine), view.id, view.spec_json, fingerprint,
                           metric, power_pp)
    runs = result["runs"]
    done, total = result["done"], result["total"]
    st.progress(done / total if total else 0, text=words.status_line(result))
    if view.spec.adaptive is not None:
        st.info(plain(study_grid.adaptive_text(view, runs)))
    left = study_estimate.remaining(engine, view)
    if left["runs"]:
        st.caption(plain(study_estimate.remaining_text(left)))
    st.dataframe(result["grid"], hide_index=True, key="study_grid")
    control_buttons(engine, view)

    st.radio("Metric", list(METRICS), horizontal=True, key=metric_key,
             index=list(METRICS).index(primary),
             format_func=lambda m: METRICS[m] + (" · primary" if m == primary
                                                 else " · exploratory"),
             help="The primary metric was fixed when the study was created; verdicts on another "
                  "are exploratory. Best val acc is the highest over epochs, picked after "
                  "seeing them: optimistic.")
    st.subheader("Per cell")
    summary = words.readable_summary(result["summary"])
    if view.spec.base.dataset == "cifar10" and set(CHAPTER_TEST_ACCURACY) & set(summary["cell"]):
        summary["chapter's test acc"] = [f"{100 * CHAPTER_TEST_ACCURACY[c]:.1f} %"
                                         if c in CHAPTER_TEST_ACCURACY else "–"
                                         for c in summary["cell"]]
    # The metric on screen and its Δ first (about 740 px: an 800 px window shows them); the
    # other metrics, runs and the chapter's numbers follow. Every column is in the CSV below.
    shown_metric = METRICS[metric]
    first = ["cell", "seeds", shown_metric, "Δ vs base (95 % CI)", "diverged"]
    order = [c for c in first if c in summary] + [c for c in summary if c not in first]
    st.dataframe(summary, hide_index=True, key="study_summary", column_order=order,
                 column_config={"cell": st.column_config.TextColumn(width=170),
                                "seeds": st.column_config.NumberColumn(width=55),
                                shown_metric: st.column_config.TextColumn(width=290),
                                "Δ vs base (95 % CI)": st.column_config.TextColumn(width=190)})
    st.caption(plain(words.summary_note(result)))
    st.subheader(f"Effects: {result['effects_kind']}")
    effects_table = words.readable_effects(result["effects"])
    # what was found, then how sure: the effect and Holm's verdict show on an 800 px window
    lead = [c for c in ("factor", "cell", "change", "effect (95 % CI)", "verdict", "seeds",
                        "seeds needed", "p (Holm)") if c in effects_table]
    st.dataframe(effects_table, hide_index=True, key="study_effects",
                 column_order=lead + [c for c in effects_table if c not in lead],
                 column_config={"effect (95 % CI)": st.column_config.TextColumn(width=220),
                                "verdict": st.column_config.TextColumn(width=150)})
    st.caption(words.effects_note(result))
    if result["complete"]:
        st.markdown(result["words"])
    else:
        st.warning(result["words"])
    if not charts:  # a new browser session: the rest once the tables are drawn (preload.py)
        if preload.charts_now():  # the browser never answered: draw it after all
            st.rerun(scope="app")
        st.container(height=CURVES_HEIGHT, border=False).caption(
            "Seeds needed, interactions, curves and the report come next…")
        return
    st.number_input("Seeds needed to detect a change of (pp)", min_value=0.05,
                    max_value=99.0, value=100 * view.spec.smallest_effect, step=0.5,
                    key=power_key)
    st.caption(words.power_text(result))
    if len(result["interactions"]):
        with st.expander("Interactions (full factorial, two levels each)"):
            st.caption("Holm-adjusted in the same family as the effects above.")
            for row in result["interactions"].to_dict("records"):
                table = result["tables"][(row["factor_1"], row["factor_2"])]
                st.markdown(plain(words.interaction_text(row)))
                st.dataframe(table.map(lambda v: f"{100 * v:.1f} %" if pd.notna(v) else "–"))
    completed = result["completed"]
    if len(completed):
        st.subheader("Validation accuracy per cell (mean ± 1 std over seeds)")
        drawn = curve_cells(result)
        shown = completed[completed["cell"].isin(drawn)]
        curves = estimators.cell_curves(epochs_frame(engine, shown["run_id"].tolist()),
                                      shown, "val_accuracy")
        st.plotly_chart(band_figure(curves, height=CURVES_HEIGHT), key="study_curves")
    st.subheader("Report")
    st.caption("Tables in Markdown and LaTeX, a forest plot of the effects (PNG, SVG) and "
               "the verdict" + ("" if result["complete"] else ", marked provisional") + ".")
    stem = f"study-{view.id}"
    # on_click="ignore": a download does not rerun this view. A rerun would give every
    # report button a new deferred-file id and drop the old ones at its end, so a second
    # click landing before the browser has the new ids would fail ("Failed to generate
    # file for download"); that is what made the downloads flaky on a loaded machine.
    files = (("Report (Markdown)", "markdown", "report.md", "text/markdown", "dl_md"),
             ("Table (LaTeX)", "latex", "table.tex", "text/x-tex", "dl_tex"),
             ("Forest plot (PNG)", "png", "forest.png", "image/png", "dl_png"),
             ("Forest plot (SVG)", "svg", "forest.svg", "image/svg+xml", "dl_svg"))
    for column, (label, kind, suffix, mime, key) in zip(st.columns(4), files, strict=True):
        column.download_button(label, report_file(view, result, kind),
                               file_name=f"{stem}-{suffix}", mime=mime, key=key,
                               on_click="ignore")
    c = st.columns(4)
    c[0].download_button("Runs (CSV)", csv_text(result["runs"]),
                         file_name=f"{stem}-runs.csv", key="dl_runs", on_click="ignore")
    c[1].download_button("Cells (CSV)", csv_text(result["summary"]),
                         file_name=f"{stem}-cells.csv", key="dl_cells", on_click="ignore")
