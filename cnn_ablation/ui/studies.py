"""Studies: an ablation as one object. Start one (presets or factors, every run setting, a fixed
number of seeds or adaptive seeds), watch its grid of cells x seeds, cancel or delete it, and read
the result: per-cell mean ± spread, effects with 95 % intervals and Holm-adjusted verdicts (only
once every run is in), seeds needed for a chosen effect size, and the report files."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pandas as pd
import streamlit as st

from cnn_ablation.architecture import PRESETS
from cnn_ablation.config import (
    BUILTIN_DATASETS,
    MAX_SEEDS,
    METRICS,
    ConfigError,
    RunConfig,
    defaults,
)
from cnn_ablation.data import datasets
from cnn_ablation.data.arrays import DatasetUnavailable
from cnn_ablation.networks import registry as networks
from cnn_ablation.settings import settings
from cnn_ablation.studies import estimate as study_estimate
from cnn_ablation.studies import estimators, words
from cnn_ablation.studies import grid as study_grid
from cnn_ablation.studies import rounds as study_rounds
from cnn_ablation.studies import spec as study_spec
from cnn_ablation.studies.results import DEFAULT_POWER_PP, results
from cnn_ablation.studies.spec import (
    CHAPTER_TEST_ACCURACY,
    NETWORK_FACTORS,
    STUDY_PRESETS,
    AdaptiveRule,
    StudySpec,
    parse_levels,
    study_preset,
)
from cnn_ablation.ui.common import (
    REFRESH_S,
    _engine,
    database_key,
    engine_or_stop,
    folder_within_roots,
    plain,
    roots_text,
    worker_banner,
)
from cnn_ablation.ui.figures import band_figure
from storage import read_models
from storage.curves import epochs_frame
from storage.read_models import any_active
from storage.studies import list_studies

DEFAULTS = defaults()
engine = engine_or_stop()
worker_banner(engine)
st.title("Studies")
st.caption("A study runs every combination of your switches with several seeds, so each effect "
           "comes with its uncertainty: a difference smaller than the seed-to-seed spread is noise.")

existing = list_studies(engine)
if existing:  # tabs cannot be switched from code: put what a returning user wants first
    view_tab, start_tab = st.tabs(["Results", "Start a study"])
else:
    start_tab, view_tab = st.tabs(["Start a study", "Results"])


@st.cache_data(ttl=30, max_entries=64, show_spinner=False)
def estimate(url: str, spec_json: str) -> tuple[float | None, str]:
    """`study_estimate.estimate_seconds`, shared for 30 s: the form redraws on every keystroke and
    the estimate reads the recent runs' timings."""
    return study_estimate.estimate_seconds(_engine(url), StudySpec.from_dict(json.loads(spec_json)))


def estimate_text(spec: StudySpec) -> str:
    seconds, basis = estimate(database_key(engine), spec.to_json())
    when = plain(basis) if seconds is None else f"{study_estimate.minutes_text(seconds)} ({plain(basis)})"
    text = f"{len(spec.cells())} cells × {spec.seeds} seeds = **{len(spec.runs())} runs**, {when}."
    rule = spec.adaptive
    if rule is not None:
        text += (f" That is round 1; adaptive seeds add {rule.step} seed(s) per cell a round at a "
                 f"time, up to {rule.max_seeds} seeds per cell "
                 f"({len(spec.cells()) * rule.max_seeds} runs at most).")
    return text


def dataset_choice(column) -> tuple[str, str | None]:
    """The dataset picked (a built-in one, or a folder under ABLATION_DATA_ROOTS) and, if it
    cannot be used, why not."""
    choices = [*BUILTIN_DATASETS, "folder:…"]
    choice = column.selectbox("Dataset", choices, key="study_dataset",
                              index=choices.index("fashion_mnist"))
    if choice != "folder:…":
        return choice, None
    roots = settings().data_roots
    path = column.text_input("Image folder (with train/<class>/ and test/<class>/)",
                             key="study_folder", help="A folder under " + plain(roots_text(roots))
                             + " (ABLATION_DATA_ROOTS)")
    if not path.strip():
        return "folder:", "enter an image folder first"
    folder, refusal = folder_within_roots(path, roots)
    if folder is None:
        return "folder:", refusal
    return f"folder:{folder}", None


def network_layers(key: str, dataset: str) -> tuple[dict | None, str | None]:
    """Your own network's BatchNorm and Dropout layers on `dataset` (the probe, in a helper
    process: this page never imports TensorFlow), or why it cannot be used."""
    try:
        info = datasets.dataset_info(dataset)
        with st.spinner("Reading the network's layers…"):
            answer = networks.probe(key, info.shape, info.num_classes)
    except (ConfigError, DatasetUnavailable) as exc:
        return None, str(exc)
    return (answer, None) if answer["ok"] else (None, answer["error"])


with start_tab:
    known = {n.key: n for n in networks.list_networks() if n.kind != "preset" or n.key == "seed"}
    study_network = st.selectbox(
        "Network", list(known), key="study_network",
        format_func=lambda k: known[k].title + ("" if known[k].kind == "preset"
                                                else f" ({known[k].kind})"),
        help="The chapter's network, or your own (a .keras file added on the New run page or "
             "in $ABLATION_HOME/networks, or a builder from ABLATION_NETWORK_PATHS): its "
             "BatchNorm and Dropout layers become the factors.")
    custom = known[study_network].kind != "preset"
    c1, c2, c3, c4 = st.columns(4)
    dataset, dataset_problem = dataset_choice(c1)
    epochs = c2.number_input("Epochs per run", value=10, min_value=1, step=1, key="study_epochs")
    seeds = c3.number_input("Seeds per cell", value=3, min_value=1, max_value=MAX_SEEDS, step=1,
                            key="study_seeds", help="3 or more give a confidence interval; "
                                                    "with adaptive seeds, the first round's")
    name = c4.text_input("Name", key="study_name", placeholder="e.g. BN ablation, 10 epochs")
    s1, s2, s3, s4 = st.columns(4)
    batch = s1.number_input("Batch size", value=DEFAULTS.batch_size, min_value=1, step=8,
                            key="study_batch_size")
    lr = s2.number_input("Learning rate (Adam)", value=DEFAULTS.learning_rate, step=0.0001,
                         format="%.5f", key="study_lr")
    val_split = s3.number_input("Validation split", value=DEFAULTS.val_split, step=0.05,
                                key="study_val_split", help="Fraction of training images held out")
    limit = s4.number_input("Use only the first N training images (0 = all)", value=0, min_value=0,
                            step=1000, key="study_limit_train")
    adaptive = st.toggle("Adaptive seeds", key="study_adaptive",
                         help="Instead of a fixed number of seeds: add seeds a round at a time "
                              "until every effect is measured precisely enough")
    rule: AdaptiveRule | None = None
    if adaptive:
        a1, a2, a3 = st.columns(3)
        target = a1.number_input("Stop when every 95 % interval is narrower than ± (pp)",
                                 value=1.0, min_value=0.01, max_value=99.0, step=0.1,
                                 key="study_target_pp")
        max_seeds = a2.number_input("… or at this many seeds per cell", value=10, min_value=2,
                                    max_value=MAX_SEEDS, step=1, key="study_max_seeds")
        step = a3.number_input("Seeds added per round", value=2, min_value=1, max_value=MAX_SEEDS,
                               step=1, key="study_seed_step")
        st.caption("The rule stops on precision only, never on significance: stopping as soon as "
                   "an interval excludes zero would make chance differences look real (optional "
                   "stopping).")
    try:
        if dataset_problem is not None:
            raise ConfigError("dataset", dataset, dataset_problem)
        common = dict(dataset=dataset, epochs=int(epochs), batch_size=int(batch),
                      learning_rate=float(lr), val_split=float(val_split),
                      limit_train=int(limit) or None)
        base = (RunConfig(network=study_network, **common) if custom  # type: ignore[arg-type]
                else RunConfig(**common))  # type: ignore[arg-type]
        if adaptive:
            rule = AdaptiveRule(half_width=float(target) / 100, max_seeds=int(max_seeds),
                                step=int(step))
    except ConfigError as exc:
        st.error(plain(exc))
        st.stop()

    st.markdown("##### One click")
    if custom:
        st.caption("The one-click studies are the chapter's network's; for your own network "
                   "pick its switches under **Your own factors**.")
    for key, title in () if custom else STUDY_PRESETS.items():
        left, right = st.columns([1, 3])
        try:
            spec = study_preset(key, base, int(seeds), rule)
        except ConfigError as exc:
            right.error(plain(exc))
            continue
        if left.button(title.split(":")[0], key=f"preset_{key}", width="stretch"):
            try:
                study_id, queued = study_grid.create(engine, spec, name or title.split(":")[0])
            except ConfigError as exc:  # a name too long, a dataset that is not here, ...
                st.error(plain(exc))
            else:
                st.session_state["study_choice"] = study_id
                st.success(f"Study #{study_id} started: {len(queued)} runs queued. "
                           "See **Results**.")
        right.markdown(f"{title}. " + estimate_text(spec))

    st.markdown("##### Your own factors")
    positions = PRESETS["seed"].bn_positions
    f1, f2, f3 = st.columns([2, 2, 1])
    layers: dict | None = None
    layers_problem: str | None = None
    layer_levels: list[tuple[str, str]] = []  # (dropout:LAYER, its levels as typed)
    if custom:
        layers, layers_problem = network_layers(study_network, dataset)
    if custom and layers is None:
        f1.error(f"**This network cannot be used here.** {plain(layers_problem)}")
        bn_factors: list[str] = []
    elif custom:
        assert layers is not None
        channels = {f"bn:{b['name']}": b["channels"] for b in layers["batchnorm"]}
        bn_factors = f1.multiselect(
            "BatchNorm layers (on/off)", list(channels), key="study_net_bn_factors",
            format_func=lambda f: f"{f[3:]} ({channels[f]} channels)",
            help="Each one a factor: that BatchNorm on, or switched off (an identity).")
        for layer in layers["dropout"]:
            layer_levels.append((f"dropout:{layer['name']}", f2.text_input(
                f"Rates of Dropout {layer['name']} (comma-separated, empty = fixed at "
                f"{layer['rate']:g})", key=f"study_net_drop_{layer['name']}",
                placeholder="0.1, 0.3")))
        if not layers["dropout"]:
            f2.caption("This network has no Dropout layer.")
    else:
        bn_factors = f1.multiselect("BatchNorm switches (on/off)",
                                    [f"bn_{p}" for p in positions], key="study_bn_factors")
    dropout_levels = "" if custom else f2.text_input(
        "Dropout levels (comma-separated, empty = fixed at 0.5)", key="study_dropout_levels",
        placeholder="0, 0.25, 0.5")
    design = f3.radio("Design", ["full", "ofat"], key="study_design",
                      format_func=lambda d: {"full": "full factorial",
                                             "ofat": "one at a time"}[d])
    g1, g2, _ = st.columns([2, 2, 1])
    lr_levels = g1.text_input("Learning rate levels (optional)", key="study_lr_levels",
                              placeholder="0.0005, 0.001")
    batch_levels = g2.text_input("Batch size levels (optional)", key="study_batch_levels",
                                 placeholder="32, 128")
    factors: dict[str, tuple] = {f: (True, False) for f in bn_factors}
    problem = None
    for factor, text in (("dropout", dropout_levels), *layer_levels,
                         ("learning_rate", lr_levels), ("batch_size", batch_levels)):
        if text.strip():
            try:
                factors[factor] = parse_levels(factor, text)
            except ConfigError as exc:
                problem = str(exc)
    if problem:
        st.error(plain(problem))
    elif factors:
        try:
            spec = StudySpec(base, factors, design, int(seeds), adaptive=rule)
            st.markdown(estimate_text(spec))
            if st.button("Start this study", type="primary", key="start_custom"):
                with st.spinner("Checking every cell…" if not custom else
                                "Checking every cell with Keras (a helper process)…"):
                    study_id, queued = study_grid.create(engine, spec, name or "custom study")
                st.session_state["study_choice"] = study_id
                st.success(f"Study #{study_id} started: {len(queued)} runs queued.")
        except ConfigError as exc:
            st.error(plain(exc))
    elif custom and layers is not None:
        st.caption("Pick at least one BatchNorm layer or give a Dropout layer's rates. "
                   f"Factors of your own network: {plain(NETWORK_FACTORS)}.")
    elif not custom:
        st.caption("Pick at least one switch or give dropout levels.")


@st.cache_data(max_entries=16, show_spinner=False)
def study_results(url: str, study_id: int, spec_json: str, fingerprint: tuple, metric: str,
                  power_pp: float) -> dict:
    """`studies.results.results`, shared by every session while the study's runs stay as they are
    (`fingerprint`: read_models.runs_fingerprint, one indexed query per refresh): a 96-cell
    study takes seconds to analyse, a refresh that finds nothing new takes milliseconds."""
    engine = _engine(url)
    return results(engine, study_grid.load(engine, study_id), metric, power_pp=power_pp)


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


def report_file(view: study_spec.StudyView, result: dict, kind: str) -> Callable[[], bytes]:
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


def control_buttons(view: study_spec.StudyView) -> None:
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
                st.session_state.pop("study_choice", None)
                st.session_state["study_deleted"] = view.id
                st.rerun(scope="app")


existing = list_studies(engine)
with view_tab:
    deleted = st.session_state.pop("study_deleted", None)
    if deleted:
        st.success(f"Study #{deleted} deleted.")
    if not existing:
        st.info("No studies yet: start one in **Start a study**.")
        st.stop()
    ids = [s.id for s in existing]
    names = {s.id: s.name for s in existing}
    chosen = st.session_state.get("study_choice")
    linked = st.query_params.get("study")  # ?study=N: a reload or a pasted link shows study N
    first_visit = not st.session_state.get("study_link_read")
    st.session_state["study_link_read"] = True  # once per session: then the picker rules (the
    # address written below must not pull the page back to the study shown first)
    if linked is not None and first_visit:
        wanted = int(linked) if re.fullmatch(r"[0-9]{1,18}", linked) else None
        if wanted in ids:
            chosen = wanted
        else:
            st.warning(f"study: {plain(repr(linked[:40]))} (from the link) is not allowed; "
                       f"allowed: the number of a study that exists (#{ids[0]} to #{ids[-1]}). "
                       "Showing " + ("the one picked before." if chosen in ids
                                     else f"the latest, #{ids[-1]}."))
    chosen = chosen if chosen in ids else ids[-1]
    study_id = st.selectbox("Study", ids, index=ids.index(chosen),
                            format_func=lambda i: f"#{i} {names[i]}")
    st.session_state["study_choice"] = study_id
    if st.query_params.get("study") != str(study_id):
        st.query_params["study"] = str(study_id)  # the address names the study shown
    first = study_grid.load(engine, study_id)
    adaptive_going = first.spec.adaptive is not None and not first.spec.adaptive.stopped
    active = adaptive_going or any_active(engine, [c.config_hash for _, c in first.spec.runs()])

    @st.fragment(run_every=REFRESH_S if active else None)
    def study_view() -> None:
        if adaptive_going:
            study_rounds.advance(engine)  # queue the next round if this one is done
        view = study_grid.load(engine, study_id)
        metric = st.session_state.get("study_metric", "final_val_accuracy")
        power_pp = float(st.session_state.get("study_power_pp", DEFAULT_POWER_PP))
        fingerprint = read_models.runs_fingerprint(
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
        control_buttons(view)

        st.radio("Metric", list(METRICS), horizontal=True, key="study_metric",
                 format_func=METRICS.get)
        st.subheader("Per cell")
        summary = words.readable_summary(result["summary"])
        if view.spec.base.dataset == "cifar10" and set(CHAPTER_TEST_ACCURACY) & set(summary["cell"]):
            summary["chapter's test acc"] = [f"{100 * CHAPTER_TEST_ACCURACY[c]:.1f} %"
                                             if c in CHAPTER_TEST_ACCURACY else "–"
                                             for c in summary["cell"]]
        st.dataframe(summary, hide_index=True, key="study_summary")
        st.caption("mean ± standard deviation over seeds [95 % confidence interval of the mean]; "
                   f"Δ vs base ({plain(result['base_cell'])}) in percentage points, paired by seed. "
                   + words.REPEATS_NOTE)
        st.subheader(f"Effects: {result['effects_kind']}")
        st.dataframe(words.readable_effects(result["effects"]), hide_index=True,
                     key="study_effects")
        st.caption("Intervals are t intervals over seeds, paired by seed (Welch's where seeds do "
                   "not pair)." + (" With several effects at once, the Holm columns adjust for "
                                   "the number of comparisons; the verdict in words uses them."
                                   if len(result["effects"]) > 1 else ""))
        if result["complete"]:
            st.markdown(result["words"])
        else:
            st.warning(result["words"])
        st.number_input("Seeds needed to detect a change of (pp)", min_value=0.05,
                        max_value=99.0, value=DEFAULT_POWER_PP, step=0.5,
                        key="study_power_pp")
        st.caption(words.power_text(result))
        if len(result["interactions"]):
            with st.expander("Interactions (full factorial, two levels each)"):
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
            st.plotly_chart(band_figure(curves), key="study_curves")
        st.subheader("Report")
        st.caption("Tables in Markdown and LaTeX, a forest plot of the effects (PNG, SVG) and "
                   "the verdict" + ("" if result["complete"] else ", marked provisional") + ".")
        stem = f"study-{view.id}"
        # on_click="ignore": a download does not rerun this view. A rerun would give every
        # report button a new deferred-file id and drop the old ones at its end, so a second
        # click landing before the browser has the new ids would fail ("Failed to generate
        # file for download"); that is what made the downloads flaky on a loaded machine.
        d = st.columns(4)
        d[0].download_button("Report (Markdown)", report_file(view, result, "markdown"),
                             file_name=f"{stem}-report.md", mime="text/markdown", key="dl_md",
                             on_click="ignore")
        d[1].download_button("Table (LaTeX)", report_file(view, result, "latex"),
                             file_name=f"{stem}-table.tex", mime="text/x-tex", key="dl_tex",
                             on_click="ignore")
        d[2].download_button("Forest plot (PNG)", report_file(view, result, "png"),
                             file_name=f"{stem}-forest.png", mime="image/png", key="dl_png",
                             on_click="ignore")
        d[3].download_button("Forest plot (SVG)", report_file(view, result, "svg"),
                             file_name=f"{stem}-forest.svg", mime="image/svg+xml", key="dl_svg",
                             on_click="ignore")
        c = st.columns(4)
        c[0].download_button("Runs (CSV)", result["runs"].to_csv(index=False),
                             file_name=f"{stem}-runs.csv", key="dl_runs", on_click="ignore")
        c[1].download_button("Cells (CSV)", result["summary"].to_csv(index=False),
                             file_name=f"{stem}-cells.csv", key="dl_cells", on_click="ignore")

    study_view()
