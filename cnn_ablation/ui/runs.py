"""Runs: every run with its status and progress; one run's live curves, config and actions."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cnn_ablation.launch import retry
from cnn_ablation.report import duration_s, format_duration
from cnn_ablation.ui.common import (
    REFRESH_S,
    TABLE_COLUMNS,
    engine_or_stop,
    pct,
    run_option,
    runs_table,
    worker_banner,
)
from cnn_ablation.ui.figures import confusion_figure, curves_figure, layer_norms_figure
from storage import lifecycle, runs
from storage.read_models import EpochsReader, any_active, layer_stats_frame, runs_frame
from storage.records import Run
from storage.status import ACTIVE, RunStatus

engine = engine_or_stop()
worker_banner(engine)
st.title("Runs")

everything = runs_frame(engine)
if everything.empty:
    st.info("No runs yet. Build a variant on the **New run** page and launch it; it shows up "
            "here and trains in the background.")
    st.page_link("cnn_ablation/ui/new_run.py", label="New run", icon=":material/science:")
    st.stop()

f1, f2 = st.columns(2)
statuses = f1.multiselect("Status", list(RunStatus), key="filter_status",
                          placeholder="all statuses")
chosen_sets = f2.multiselect("Dataset", sorted(everything["dataset"].unique()),
                             key="filter_dataset", placeholder="all datasets")


epochs_reader: EpochsReader = st.session_state.setdefault("epoch_cache", EpochsReader())
active_now = bool(everything["status"].isin(ACTIVE).any())


@st.fragment(run_every=REFRESH_S if active_now else None)
def live() -> None:
    frame = runs_frame(engine, statuses=statuses or None, datasets=chosen_sets or None)
    if active_now and not any_active(engine):
        st.rerun()  # nothing left to watch: a full rerun turns the timer off
    if frame.empty:
        st.info("No run matches these filters.")
        return
    st.dataframe(runs_table(frame), hide_index=True, column_config=TABLE_COLUMNS,
                 placeholder="–")
    options = frame["id"].tolist()
    records = {r["id"]: r for r in frame.to_dict("records")}
    chosen = st.session_state.get("run_choice")
    wanted = st.query_params.get("run")
    if chosen is None and wanted and wanted.isdigit():
        chosen = int(wanted)
    if chosen not in options:
        chosen = options[-1]
    # No widget key: the index follows `run_choice`, which Retry/Delete may change too.
    run_id = st.selectbox("Run", options, index=options.index(chosen),
                          format_func=lambda i: run_option(records[i]))
    st.session_state["run_choice"] = run_id
    show_run(records[run_id])


def show_run(row: dict) -> None:
    run = runs.find_run_or_raise(engine, int(row["id"]))
    st.subheader(f"Run #{run.id}{' · ' + run.name if run.name else ''}: {run.label}")
    cols = st.columns(5)
    cols[0].metric("Status", run.status)
    cols[1].metric("Epochs", f"{int(row['epochs_done'])}/{run.epochs}")
    cols[2].metric("Best val acc", pct(row.get("best_val_accuracy")))
    cols[3].metric("Test acc", pct(run.test_accuracy))
    cols[4].metric("Time", format_duration(duration_s(run.__dict__)) or "–")
    if run.status == RunStatus.RUNNING and run.progress_batches:
        st.progress(min((run.progress_batch or 0) / run.progress_batches, 1.0),
                    text=f"epoch {run.progress_epoch}/{run.epochs}: batch {run.progress_batch} "
                         f"of {run.progress_batches} · {run.device or ''}")
    elif run.status == RunStatus.QUEUED:
        st.info("Queued: waits for a free worker slot.")
    if run.error and run.status != RunStatus.COMPLETED:
        box = st.warning if run.status == RunStatus.CANCELLED else st.error
        box(f"**{run.status}**: {run.error}")
        if run.traceback:
            with st.expander("Traceback"):
                st.code(run.traceback)
    epochs = epochs_reader.read(engine, [run.id])
    if len(epochs):
        st.plotly_chart(curves_figure(epochs, {run.id: run.label}), key="run_curves",
                        config={"displaylogo": False})
    else:
        st.caption("No finished epoch yet: the curves appear when the first epoch ends.")
    actions(run)
    with st.expander("Config, device and timing"):
        st.json(run.config)
        st.caption(f"{run.params or 0:,} parameters · device {run.device or '–'} on "
                   f"{run.host or '–'} · config hash {run.config_hash}")
    if run.status == RunStatus.COMPLETED:
        report = run.test_report
        stats = layer_stats_frame(engine, [run.id])
        with st.expander("Diagnostics: per-layer gradient and weight norms, confusion matrix"):
            if len(stats):
                st.plotly_chart(layer_norms_figure(stats), key="run_norms")
            if report:
                st.plotly_chart(confusion_figure(report), key="run_confusion")
                totals = [sum(r) for r in report["confusion"]]
                st.dataframe(pd.DataFrame({
                    "class": report["class_names"],
                    "accuracy": [100 * report["confusion"][i][i] / t if t else None
                                 for i, t in enumerate(totals)],
                    "images": totals}), hide_index=True,
                    column_config={"accuracy": st.column_config.NumberColumn(format="%.1f %%")})


def actions(run: Run) -> None:
    a, b, c, _ = st.columns([1, 1, 1, 4])
    if a.button("Cancel", key=f"cancel_{run.id}", disabled=run.status not in ACTIVE):
        lifecycle.request_cancel(engine, run.id)
        st.toast(f"Cancel requested for run #{run.id}")
        st.rerun()
    if b.button("Retry", key=f"retry_{run.id}", help="A new run with the same config"):
        new_id = retry(engine, run.id)
        st.session_state["run_choice"] = new_id
        st.toast(f"Queued run #{new_id} with the same config")
        st.rerun()
    if c.button("Delete", key=f"delete_{run.id}", disabled=run.status == RunStatus.RUNNING,
                help="Delete the run and its epochs (cancel a running run first)"):
        runs.delete_run(engine, run.id)
        st.session_state["run_choice"] = None
        epochs_reader.forget(run.id)
        st.rerun()


live()
