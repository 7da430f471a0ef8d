"""Studies: an ablation as one object. Start one (presets or factors), watch its grid of cells x
seeds, and read the result: per-cell mean ± spread, effects with 95 % intervals, plain words."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cnn_ablation import analysis, studies
from cnn_ablation.architecture import PRESETS
from cnn_ablation.config import BUILTIN_DATASETS, MAX_SEEDS, METRICS, ConfigError, RunConfig
from cnn_ablation.study_spec import (
    CHAPTER_TEST_ACCURACY,
    STUDY_PRESETS,
    StudySpec,
    parse_levels,
    study_preset,
)
from cnn_ablation.ui.common import REFRESH_S, engine_or_stop, plain, worker_banner
from cnn_ablation.ui.figures import band_figure
from storage.read_models import any_active, epochs_frame
from storage.studies import list_studies

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


def estimate_text(spec: StudySpec) -> str:
    seconds, basis = studies.estimate_seconds(engine, spec)
    when = (f"about {seconds / 60:.0f} min" if seconds and seconds < 5400
            else f"about {seconds / 3600:.1f} h" if seconds else "no time estimate yet")
    return f"{len(spec.cells())} cells × {spec.seeds} seeds = **{len(spec.runs())} runs**, {when} ({basis})."


with start_tab:
    c1, c2, c3, c4 = st.columns(4)
    dataset = c1.selectbox("Dataset", list(BUILTIN_DATASETS), key="study_dataset",
                           index=list(BUILTIN_DATASETS).index("fashion_mnist"))
    epochs = c2.number_input("Epochs per run", value=10, min_value=1, step=1, key="study_epochs")
    seeds = c3.number_input("Seeds per cell", value=3, min_value=1, max_value=MAX_SEEDS, step=1,
                            key="study_seeds", help="3 or more give a confidence interval")
    name = c4.text_input("Name", key="study_name", placeholder="e.g. BN ablation, 10 epochs")
    try:
        base = RunConfig(dataset=dataset, epochs=int(epochs))
    except ConfigError as exc:
        st.error(plain(exc))
        st.stop()

    st.markdown("##### One click")
    for key, title in STUDY_PRESETS.items():
        spec = study_preset(key, base, int(seeds))
        left, right = st.columns([1, 3])
        if left.button(title.split(":")[0], key=f"preset_{key}", width="stretch"):
            try:
                study_id, queued = studies.create(engine, spec, name or title.split(":")[0])
            except ConfigError as exc:  # a name too long or with control characters, say
                st.error(plain(exc))
            else:
                st.session_state["study_choice"] = study_id
                st.success(f"Study #{study_id} started: {len(queued)} runs queued. "
                           "See **Results**.")
        right.markdown(f"{title}. " + estimate_text(spec))

    st.markdown("##### Your own factors")
    positions = PRESETS["seed"].bn_positions
    f1, f2, f3 = st.columns([2, 2, 1])
    bn_factors = f1.multiselect("BatchNorm switches (on/off)", [f"bn_{p}" for p in positions],
                                key="study_bn_factors")
    dropout_levels = f2.text_input("Dropout levels (comma-separated, empty = fixed at 0.5)",
                                   key="study_dropout_levels", placeholder="0, 0.25, 0.5")
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
    for factor, text in (("dropout", dropout_levels), ("learning_rate", lr_levels),
                         ("batch_size", batch_levels)):
        if text.strip():
            try:
                factors[factor] = parse_levels(factor, text)
            except ConfigError as exc:
                problem = str(exc)
    if problem:
        st.error(plain(problem))
    elif factors:
        try:
            spec = StudySpec(base, factors, design, int(seeds))
            st.markdown(estimate_text(spec))
            if st.button("Start this study", type="primary", key="start_custom"):
                study_id, queued = studies.create(engine, spec, name or "custom study")
                st.session_state["study_choice"] = study_id
                st.success(f"Study #{study_id} started: {len(queued)} runs queued.")
        except ConfigError as exc:
            st.error(plain(exc))
    else:
        st.caption("Pick at least one switch or give dropout levels.")

existing = list_studies(engine)
with view_tab:
    if not existing:
        st.info("No studies yet: start one in **Start a study**.")
        st.stop()
    ids = [s.id for s in existing]
    names = {s.id: s.name for s in existing}
    chosen = st.session_state.get("study_choice")
    chosen = chosen if chosen in ids else ids[-1]
    study_id = st.selectbox("Study", ids, index=ids.index(chosen),
                            format_func=lambda i: f"#{i} {names[i]}")
    st.session_state["study_choice"] = study_id
    view = studies.load(engine, study_id)
    active = any_active(engine, [c.config_hash for _, c in view.spec.runs()])

    @st.fragment(run_every=REFRESH_S if active else None)
    def study_view() -> None:
        runs = studies.attempts(engine, view)  # once per refresh, for the grid and results
        grid = studies.grid(engine, view, runs)
        total = len(grid) * view.spec.seeds
        done = int(grid["done"].sum())
        st.progress(done / total if total else 0, text=f"{done} of {total} runs completed")
        st.dataframe(grid, hide_index=True, key="study_grid")
        b1, b2, _ = st.columns([1, 1, 3])
        if b1.button("Fill missing", key="fill", help="Queue cells/seeds never run; completed "
                                                    "runs with the same config count"):
            queued = studies.fill_missing(engine, view.id)
            st.toast(f"Queued {len(queued)} runs")
        if b2.button("Re-run failed", key="rerun", help="Queue again cells/seeds whose runs all "
                                                       "failed, diverged or were cancelled"):
            queued = studies.rerun_failed(engine, view.id)
            st.toast(f"Queued {len(queued)} runs")

        metric = st.radio("Metric", list(METRICS), horizontal=True, key="study_metric",
                          format_func=METRICS.get)
        result = studies.results(engine, view, metric, runs)
        st.subheader("Per cell")
        summary = analysis.readable_summary(result["summary"])
        if view.spec.base.dataset == "cifar10" and set(CHAPTER_TEST_ACCURACY) & set(summary["cell"]):
            summary["chapter's test acc"] = [f"{100 * CHAPTER_TEST_ACCURACY[c]:.1f} %"
                                             if c in CHAPTER_TEST_ACCURACY else "–"
                                             for c in summary["cell"]]
        st.dataframe(summary, hide_index=True, key="study_summary")
        st.caption("mean ± standard deviation over seeds [95 % confidence interval of the mean]")
        st.subheader("Effects")
        st.dataframe(analysis.readable_effects(result["effects"]), hide_index=True,
                     key="study_effects")
        st.markdown(result["words"])
        if len(view.spec.factors) >= 2 and len(result["completed"]):
            with st.expander("Interaction of two factors"):
                names_ = list(view.spec.factors)
                a = st.selectbox("First factor", names_, key="inter_a")
                b = st.selectbox("Second factor", [n for n in names_ if n != a], key="inter_b")
                table, est = analysis.interaction(result["completed"], a, b, metric)
                st.dataframe(table.map(lambda v: f"{100 * v:.1f} %" if pd.notna(v) else "–"))
                if est is not None:
                    st.markdown(f"Interaction (how much the effect of {b} changes when {a} "
                                f"changes): {100 * est.value:+.1f} pp, "
                                f"{est.verdict}.")
        completed = result["completed"]
        if len(completed):
            curves = analysis.cell_curves(epochs_frame(engine, completed["run_id"].tolist()),
                                          completed, "val_accuracy")
            st.subheader("Validation accuracy per cell (mean ± 1 std over seeds)")
            st.plotly_chart(band_figure(curves), key="study_curves")
        d1, d2, _ = st.columns([1, 1, 3])
        d1.download_button("Runs (CSV)", result["runs"].to_csv(index=False),
                           file_name=f"study-{view.id}-runs.csv", key="dl_runs")
        d2.download_button("Cells (CSV)", result["summary"].to_csv(index=False),
                           file_name=f"study-{view.id}-cells.csv", key="dl_cells")

    study_view()
