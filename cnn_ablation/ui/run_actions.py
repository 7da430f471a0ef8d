"""What can be done to runs from the Runs page, and the dialogs that ask first: one run's buttons
(Cancel, Stop after this epoch, Stop now, Retry, Delete), the bulk bar of several selected rows
(Cancel, Delete, Compare, Clear), and the confirmations for Stop now and Delete, which say exactly
what goes (the epoch in progress; the run's epochs, steps, norms, test results and files). A
button opens a dialog by setting `runs_dialog` in session state and rerunning
(cnn_ablation/ui/runs_state.py); the page calls `open_pending_dialog` on every run while it is
set, and confirming, "Keep ..." or dismissing it clears it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from sqlalchemy import Engine

from cnn_ablation.jobs.launch import delete_runs, retry, run_files
from cnn_ablation.storage import curves, lifecycle, listings, runs
from cnn_ablation.storage.curves import EPOCH_CACHE
from cnn_ablation.storage.records import Run, RunNotFound
from cnn_ablation.storage.run_filters import RunFilter
from cnn_ablation.storage.status import CancelMode, RunStatus
from cnn_ablation.ui.common import page_file, plain
from cnn_ablation.ui.runs_state import (
    DELETED,
    DIALOG,
    FLASH,
    FORCE,
    close_dialog,
    open_dialog,
    select_rows,
)


def open_pending_dialog(engine: Engine) -> None:
    """Open the confirmation a button asked for (DIALOG), on every run until it is answered."""
    if pending := st.session_state.get(DIALOG):
        kind, target = pending
        if kind == "stop_now":
            confirm_stop_now(engine, int(target))
        else:
            confirm_delete(engine,
                           tuple(target) if isinstance(target, (tuple, list)) else (int(target),))


def after_cancel(run_id: int, status: RunStatus, asked: str) -> None:
    """Toast what the request did (the run may have moved on since the page was drawn), rerun."""
    if status == RunStatus.RUNNING:
        st.session_state[FLASH] = f"Run #{run_id}: {asked}"
    else:
        st.session_state[FLASH] = f"Run #{run_id} is {status}"
    st.rerun()


def actions(engine: Engine, run: Run) -> None:
    row = st.container(horizontal=True)  # the buttons side by side, from the left
    if run.status == RunStatus.QUEUED:
        if row.button("Cancel", key=f"cancel_{run.id}", icon=":material/block:",
                      help="It has not started: it leaves the queue and never runs"):
            after_cancel(run.id, lifecycle.request_cancel(engine, run.id, now=True), "cancelled")
    elif run.status == RunStatus.RUNNING:
        asked_now = run.cancel_requested and run.cancel_mode == CancelMode.NOW
        if row.button("Stop after this epoch", key=f"stop_epoch_{run.id}",
                      disabled=run.cancel_requested, type="primary",
                      help="Finishes the epoch in progress and keeps it, then the run ends as "
                           "cancelled (not tested)"):
            after_cancel(run.id, lifecycle.request_cancel(engine, run.id),
                         "stops after its current epoch")
        if row.button("Stop now…", key=f"stop_now_{run.id}", disabled=asked_now,
                      icon=":material/stop_circle:",
                      help="Stops at once; the epoch in progress is discarded (asks first)"):
            open_dialog("stop_now", run.id)
    if row.button("Retry", key=f"retry_{run.id}", icon=":material/replay:",
                  help="A new run with the same config"):
        new_id = retry(engine, run.id)
        st.session_state[FORCE] = new_id
        st.session_state[FLASH] = f"Queued run #{new_id} with the same config"
        st.rerun()
    if row.button("Delete…", key=f"delete_{run.id}", disabled=run.status == RunStatus.RUNNING,
                  icon=":material/delete:",
                  help="Delete the run, its epochs and its files, after asking (stop a running "
                       "run first)"):
        open_dialog("delete", (run.id,))


def run_words(run: Run, epochs_done: int) -> str:
    """`run #3 · my name: BN 1·1·0·0·1 · drop 0.5 on synthetic, 2 of 10 epochs recorded`."""
    name = f" · {plain(run.name)}" if run.name else ""
    return (f"**run #{run.id}**{name}: {plain(run.label)} on {plain(run.dataset)}, "
            f"{epochs_done} of {run.epochs} epochs recorded")


def epochs_done_of(engine: Engine, run_id: int) -> int:
    return curves.epoch_counts(engine, [run_id]).get(run_id, 0)


def gone(run_id: int, run: Run | None, what: str) -> None:
    st.info(f"Run #{run_id} is {run.status if run else 'deleted'} now: {what}.")
    if st.button("Close", key="dialog_close"):
        close_dialog()
        st.rerun()


@st.dialog("Stop this run now?", on_dismiss=close_dialog)
def confirm_stop_now(engine: Engine, run_id: int) -> None:
    run = runs.find_run(engine, run_id)
    if run is None or run.status != RunStatus.RUNNING:
        gone(run_id, run, "there is nothing to stop")
        return
    done = epochs_done_of(engine, run_id)
    st.markdown(f"Stop {run_words(run, done)}, **at once**:")
    st.markdown(f"- the epoch in progress (epoch {run.progress_epoch or done + 1}) is "
                "**discarded**;\n"
                f"- the {done} finished epoch(s) and their curves **stay**;\n"
                "- the run ends as **cancelled** and is not tested.")
    st.caption("To keep the epoch in progress, use **Stop after this epoch** instead.")
    a, b = st.columns(2)
    if a.button("Stop now", type="primary", key="confirm_stop_now"):
        status = lifecycle.request_cancel(engine, run_id, now=True)
        close_dialog()
        after_cancel(run_id, status, "stops now")
    if b.button("Keep training", key="dialog_close"):
        close_dialog()
        st.rerun()


def files_of(run: Run) -> list[Path]:
    """The run's files that exist now (log, checkpoint, TensorBoard folder): what Delete
    removes from disk."""
    return [p for p in run_files(run.id, run.log_path, run.checkpoint_path) if p.exists()]


def file_kind(path: Path) -> str:
    if path.suffix == ".log":
        return "log"
    if path.suffix == ".keras":
        return "checkpoint"
    return "TensorBoard folder"


@st.dialog("Delete?", on_dismiss=close_dialog)
def confirm_delete(engine: Engine, run_ids: tuple[int, ...]) -> None:
    found = [r for r in (runs.find_run(engine, i) for i in run_ids) if r is not None]
    doomed = [r for r in found if r.status != RunStatus.RUNNING]
    if not doomed:
        gone(run_ids[0], found[0] if found else None,
             "it cannot be deleted" if found else "nothing to delete")
        return
    counts = curves.epoch_counts(engine, [r.id for r in doomed])
    if len(doomed) == 1:
        run = doomed[0]
        st.markdown(f"Delete {run_words(run, counts.get(run.id, 0))} (status {run.status})?")
    else:
        total = sum(counts.values())
        st.markdown(f"Delete these **{len(doomed)} runs** ({total:,} recorded epochs in all)?")
        st.markdown("\n".join(f"- {run_words(r, counts.get(r.id, 0))} ({r.status})"
                              for r in doomed))
    skipped = [r.id for r in found if r.status == RunStatus.RUNNING]
    if skipped:
        st.warning("Running, so kept (stop them first): "
                   + ", ".join(f"run #{i}" for i in skipped))
    files = [p for r in doomed for p in files_of(r)]
    its = "its" if len(doomed) == 1 else "their"
    st.markdown(f"This removes from the database the run{'s' if len(doomed) > 1 else ''}, {its} "
                "recorded epochs, steps and per-layer norms, and test results"
                + (f", and from disk {its} files: "
                   + ", ".join(f"{file_kind(p)} `{plain(p.name)}`" for p in files) if files
                   else f"; no files of {its} are left on disk")
                + ". It cannot be undone.")
    ids = [r.id for r in doomed]
    a, b = st.columns(2)
    label = f"Delete run #{ids[0]}" if len(ids) == 1 else f"Delete {len(ids)} runs"
    if a.button(label, type="primary", key="confirm_delete", icon=":material/delete:"):
        try:
            removed = delete_runs(engine, ids)
        except (ValueError, RunNotFound) as exc:  # it started, or went, since the dialog opened
            st.error(plain(exc))
            return
        for run_id in ids:
            EPOCH_CACHE.forget(engine, run_id)
        st.session_state[FORCE] = None
        st.session_state[DELETED] = ids[0]
        select_rows([])
        names = ", ".join(f"#{i}" for i in ids)
        st.session_state[FLASH] = [f"Run {names} deleted" if len(ids) == 1
                                   else f"Runs {names} deleted"]
        if removed:
            st.session_state[FLASH].append(
                f"Removed {len(removed)} file{'s' if len(removed) != 1 else ''} or folder"
                f"{'s' if len(removed) != 1 else ''}: " + ", ".join(p.name for p in removed))
        close_dialog()
        st.rerun()
    if b.button("Keep it" if len(ids) == 1 else "Keep them", key="dialog_close"):
        close_dialog()
        st.rerun()


def bulk_actions(engine: Engine, selected: list[int]) -> None:
    """What several selected rows can do at once: cancel, delete (asks first), compare."""
    rows = listings.run_rows(engine, RunFilter(ids=tuple(selected)))
    if len(rows) < 2:
        return
    active = [r for r in rows if r["status"] in (RunStatus.QUEUED, RunStatus.RUNNING)
              and not r["cancel_requested"]]
    deletable = [r["id"] for r in rows if r["status"] != RunStatus.RUNNING]
    bar = st.container(horizontal=True, vertical_alignment="center")
    bar.markdown(f"**{len(rows)} runs selected:** " + ", ".join(f"#{r['id']}" for r in rows))
    if bar.button(f"Cancel {len(active)}", key="bulk_cancel", icon=":material/block:",
                  disabled=not active,
                  help="Queued runs leave the queue; running ones stop after their current "
                       "epoch, which is kept"):
        for r in active:
            lifecycle.request_cancel(engine, r["id"], now=r["status"] == RunStatus.QUEUED)
        st.session_state[FLASH] = f"Asked {len(active)} runs to stop"
        st.rerun()
    if bar.button(f"Delete {len(deletable)}…", key="bulk_delete", icon=":material/delete:",
                  disabled=not deletable, help="Asks first; running runs are kept"):
        open_dialog("delete", tuple(deletable))
    if bar.button("Compare", key="bulk_compare", icon=":material/compare_arrows:",
                  help="Open these runs on the Compare page"):
        st.switch_page(page_file("compare"),
                       query_params={"runs": ",".join(str(r["id"]) for r in rows)})
    if bar.button("Clear", key="bulk_clear", icon=":material/deselect:",
                  help="Select no rows"):
        select_rows([])
        st.rerun()
