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
from storage import queries
from storage.queries import ACTIVE_STATUSES

engine = engine_or_stop()
worker_banner(engine)
st.title("Runs")

everything = queries.runs_frame(engine)
if everything.empty:
    st.info("No runs yet. Build a variant on the **New run** page and launch it; it shows up "
            "here and trains in the background.")
    st.page_link("cnn_ablation/ui/new_run.py", label="New run", icon=":material/science:")
    st.stop()

f1, f2 = st.columns(2)
statuses = f1.multiselect("Status", ["queued", "running", "completed", "failed", "cancelled",
                                     "diverged"], key="filter_status", placeholder="all statuses")
chosen_sets = f2.multiselect("Dataset", sorted(everything["dataset"].unique()),
                             key="filter_dataset", placeholder="all datasets")


def epochs_since_last_draw(run_ids: list[int]) -> pd.DataFrame:
    """All epochs of `run_ids`, reading from the database only those newer than already drawn."""
    cache: dict[int, pd.DataFrame] = st.session_state.setdefault("epoch_cache", {})
    after = {rid: int(cache[rid]["epoch"].max()) for rid in run_ids
             if rid in cache and len(cache[rid])}
    fresh = queries.epochs_frame(engine, run_ids, after=after or None)
    st.session_state["epoch_rows_read"] = len(fresh)  # visible to tests: what this refresh read
    for rid in run_ids:
        new = fresh[fresh["run_id"] == rid]
        old = cache.get(rid)
        cache[rid] = new if old is None else pd.concat([old, new], ignore_index=True)
    frames = [cache[rid] for rid in run_ids if len(cache[rid])]
    return pd.concat(frames, ignore_index=True) if frames else fresh.iloc[0:0]


active_now = bool(everything["status"].isin(ACTIVE_STATUSES).any())


@st.fragment(run_every=REFRESH_S if active_now else None)
def live() -> None:
    frame = queries.runs_frame(engine, statuses=statuses or None, datasets=chosen_sets or None)
    still_active = bool(queries.list_runs(engine, statuses=list(ACTIVE_STATUSES)))
    if active_now and not still_active:
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
    run = queries.find_run_or_raise(engine, int(row["id"]))
    st.subheader(f"Run #{run.id}{' · ' + run.name if run.name else ''}: {run.label}")
    cols = st.columns(5)
    cols[0].metric("Status", run.status)
    cols[1].metric("Epochs", f"{int(row['epochs_done'])}/{run.epochs}")
    cols[2].metric("Best val acc", pct(row.get("best_val_accuracy")))
    cols[3].metric("Test acc", pct(run.test_accuracy))
    cols[4].metric("Time", format_duration(duration_s(run.__dict__)) or "–")
    if run.status == "running" and run.progress_batches:
        st.progress(min((run.progress_batch or 0) / run.progress_batches, 1.0),
                    text=f"epoch {run.progress_epoch}/{run.epochs}: batch {run.progress_batch} "
                         f"of {run.progress_batches} · {run.device or ''}")
    elif run.status == "queued":
        st.info("Queued: waits for a free worker slot.")
    if run.error and run.status != "completed":
        box = st.warning if run.status == "cancelled" else st.error
        box(f"**{run.status}**: {run.error}")
        if run.traceback:
            with st.expander("Traceback"):
                st.code(run.traceback)
    epochs = epochs_since_last_draw([run.id])
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
    if run.status == "completed":
        report = run.test_report
        stats = queries.layer_stats_frame(engine, [run.id])
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


def actions(run) -> None:
    a, b, c, _ = st.columns([1, 1, 1, 4])
    if a.button("Cancel", key=f"cancel_{run.id}", disabled=run.status not in ACTIVE_STATUSES):
        queries.request_cancel(engine, run.id)
        st.toast(f"Cancel requested for run #{run.id}")
        st.rerun()
    if b.button("Retry", key=f"retry_{run.id}", help="A new run with the same config"):
        new_id = retry(engine, run.id)
        st.session_state["run_choice"] = new_id
        st.toast(f"Queued run #{new_id} with the same config")
        st.rerun()
    if c.button("Delete", key=f"delete_{run.id}", disabled=run.status == "running",
                help="Delete the run and its epochs (cancel a running run first)"):
        queries.delete_run(engine, run.id)
        st.session_state["run_choice"] = None
        st.session_state.get("epoch_cache", {}).pop(run.id, None)
        st.rerun()


live()
