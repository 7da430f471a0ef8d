"""Runs: every run with its status and progress; one run's live curves, config and actions.

The table is a page of 50 runs, filtered, sorted and paged in SQL (storage.read_models), so the
page costs the same with 10 runs or 10,000. While runs are active, the live part asks the
database one indexed question every second (has anything changed?) and reads again only what
did: the page of runs through a cache shared by every session, the chosen run's new epochs
through the shared epoch cache.

Stop now and Delete ask first, in a dialog. Which dialog is open lives in session_state
(`runs_dialog`): a button sets it and reruns the app, the script opens the dialog while it is set,
and confirming, "Keep ..." or dismissing it clears it. So the dialog survives the live refresh and
any full rerun, and AppTest (which reruns the whole script on every click) can drive it too.
"""

from __future__ import annotations

from dataclasses import astuple

import pandas as pd
import streamlit as st

from cnn_ablation.launch import retry
from cnn_ablation.report import duration_s, format_duration
from cnn_ablation.ui import common
from cnn_ablation.ui.common import (
    CANCELLING,
    LIVE_S,
    REFRESH_S,
    TABLE_COLUMNS,
    engine_or_stop,
    pct,
    plain,
    run_option,
    runs_table,
    shown_status,
    worker_banner,
)
from cnn_ablation.ui.figures import confusion_figure, curves_figure, layer_norms_figure
from storage import lifecycle, read_models, runs
from storage.read_models import EPOCH_CACHE, SORTS, RunFilter, RunsPage
from storage.records import Run, RunNotFound
from storage.status import CancelMode, RunStatus

DIALOG = "runs_dialog"  # ("stop_now" | "delete", run id) while a confirmation is open
FLASH = "runs_flash"  # a message to toast on the next run (a toast before st.rerun is lost)
DELETED = "run_deleted"  # the run just deleted: nothing is selected until the user picks one
SELECT = "run_select"  # the run picker's key; `run_choice` mirrors it (and outlives it)
FORCE = "run_force"  # a run to select on the next run (set by Retry and Delete)
PAGE = "runs_page"  # the listing's page number (1-based)

engine = engine_or_stop()
worker_banner(engine)
st.title("Runs")
if flash := st.session_state.pop(FLASH, None):
    st.toast(flash)

url = common.database_key(engine)
token = read_models.change_token(engine)  # one indexed query: is there anything, what changed
if token.runs == 0:
    st.info("No runs yet. Build a variant on the **New run** page and launch it; it shows up "
            "here and trains in the background.")
    st.page_link("cnn_ablation/ui/new_run.py", label="New run", icon=":material/science:")
    st.stop()


def first_page() -> None:
    st.session_state[PAGE] = 1


f1, f2, f3, f4 = st.columns([2, 2, 2, 1.4])
statuses = f1.multiselect("Status", list(RunStatus), key="filter_status",
                          placeholder="all statuses", on_change=first_page)
chosen_sets = f2.multiselect("Dataset", common.datasets_in_use(url, token.runs_version),
                             key="filter_dataset", placeholder="all datasets",
                             on_change=first_page)
text = f3.text_input("Find", key="filter_text", placeholder="in the name or config",
                     on_change=first_page)
sort = f4.selectbox("Sort", list(SORTS), key="runs_sort", on_change=first_page)
filters = RunFilter(statuses=tuple(statuses), datasets=tuple(chosen_sets), text=text)
active_now = token.active > 0
listing = common.runs_page(url, tuple(token), astuple(filters), sort,
                           int(st.session_state.get(PAGE, 1)))


@st.fragment(run_every=REFRESH_S if active_now else None)
def table() -> None:
    """The page of runs. While runs are active it asks the database one indexed question every
    REFRESH_S; the page comes from a cache shared by all sessions and keyed by the answer, so it
    is read again only when something changed."""
    now = read_models.change_token(engine)
    if active_now and now.active == 0:
        st.rerun()  # nothing left to watch: a full rerun turns the timers off
    shown = common.runs_page(url, tuple(now), astuple(filters), sort,
                             int(st.session_state.get(PAGE, 1)))
    if [r["id"] for r in shown.rows] != [r["id"] for r in listing.rows]:
        st.rerun()  # other runs on the page (new ones, another page): the picker follows
    if shown.rows:
        st.dataframe(runs_table(pd.DataFrame(shown.rows)), hide_index=True,
                     column_config=TABLE_COLUMNS, placeholder="–")
        pager(shown)


def pager(page: RunsPage) -> None:
    """Which runs are shown: `runs 51–100 of 10,000`, and the page number to show."""
    if page.pages == 1:
        st.caption(f"{page.total:,} run{'s' if page.total != 1 else ''}, {sort}")
        return
    st.session_state[PAGE] = page.page  # clamped: the filters may have left fewer pages
    left, right = st.columns([1, 5], vertical_alignment="bottom")
    left.number_input(f"Page (of {page.pages:,})", min_value=1, step=1, key=PAGE)
    last = page.first + len(page.rows) - 1
    right.caption(f"Runs {page.first:,}–{last:,} of {page.total:,}, {sort}")


def picked() -> int | None:
    """The run whose details show: the picker's own state, else the last choice (a widget's
    state goes when another page shows), else the run in the URL (?run=N, links from New run),
    else the newest run on the page. A choice on another page of the listing stays chosen."""
    records = {r["id"]: r for r in listing.rows}
    if FORCE in st.session_state:  # Retry or Delete chose (or cleared) the run
        st.session_state[SELECT] = st.session_state.pop(FORCE)
    chosen = st.session_state.get(SELECT, st.session_state.get("run_choice"))
    deleted = st.session_state.get(DELETED)
    wanted = st.query_params.get("run")
    if chosen is None and deleted is None and wanted and wanted.isdigit():
        chosen = int(wanted)
    if chosen is not None and chosen not in records:
        elsewhere = read_models.run_rows(engine, RunFilter(
            statuses=filters.statuses, datasets=filters.datasets, text=filters.text,
            ids=(int(chosen),)))
        records = {**{r["id"]: r for r in elsewhere}, **records}
    if chosen not in records:
        chosen = None if deleted is not None else max(records)
    st.session_state[SELECT] = chosen
    run_id = st.selectbox("Run", list(records), key=SELECT,
                          format_func=lambda i: run_option(records[i]),
                          placeholder="Pick a run to see its curves and actions")
    st.session_state["run_choice"] = run_id
    if run_id is not None:
        st.session_state.pop(DELETED, None)
    return run_id


def phase_text(run: Run) -> str | None:
    """Where a running run is, in words: `training: epoch 2 of 10, batch 300 of 1,407`,
    `testing: 4,000 of 10,000 images` (while testing, the progress counts images)."""
    if run.status != RunStatus.RUNNING:
        return None
    phase = run.phase or "starting"
    done, total = run.progress_batch or 0, run.progress_batches
    if phase == "testing" and total:
        return f"testing: {done:,} of {total:,} images"
    if phase == "training" and total:
        return f"training: epoch {run.progress_epoch} of {run.epochs}, batch {done:,} of {total:,}"
    if phase == "validating":
        return f"validating: epoch {run.progress_epoch} of {run.epochs}"
    return phase


def run_state(run: Run) -> tuple:
    """What the actions below the curves depend on: when it changes, they are drawn again."""
    return run.status, run.cancel_requested, run.cancel_mode


def show_run(run_id: int) -> None:
    run = runs.find_run(engine, run_id)
    if run is None:  # deleted elsewhere (the CLI) since the table was read
        st.info(f"Run #{run_id} no longer exists.")
        return
    # An active run's status, progress and curves redraw every LIVE_S, reading only its new
    # epochs (through the shared cache): a saved epoch is on screen within about a second.
    active = run.status in (RunStatus.QUEUED, RunStatus.RUNNING)
    st.fragment(live_run, run_every=LIVE_S if active else None)(run.id, run_state(run))
    actions(run)
    with st.expander("Config, device and timing"):
        st.json(run.config)
        st.caption(plain(f"{run.params or 0:,} parameters · device {run.device or '–'} on "
                         f"{run.host or '–'} · config hash {run.config_hash}"
                         + (f" · log {run.log_path}" if run.log_path else "")))
    if run.status == RunStatus.COMPLETED:
        report = run.test_report
        last = read_models.last_epochs(engine, [run.id]).get(run.id, 0)
        stats = common.layer_stats(url, run.id, last)
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


def live_run(run_id: int, drawn: tuple) -> None:
    """The run's status, progress and curves. When its state changes (finished, cancelling,
    requeued, deleted) the whole page is drawn again: the actions below depend on it."""
    run = runs.find_run(engine, run_id)
    if run is None or run_state(run) != drawn:
        st.rerun()  # deleted, finished, cancelling, requeued: the actions change too
    assert run is not None
    epochs, st.session_state["epoch_rows_read"] = EPOCH_CACHE.read(engine, [run.id])
    status = shown_status(run.__dict__)
    title = f"Run #{run.id}{' · ' + plain(run.name) if run.name else ''}: {plain(run.label)}"
    st.subheader(title + (f" · {CANCELLING}" if status == CANCELLING else ""))
    cols = st.columns([1.4, 1, 1, 1, 1])
    cols[0].metric("Status", status)
    cols[1].metric("Epochs", f"{len(epochs)}/{run.epochs}")
    best = pd.to_numeric(epochs["val_accuracy"], errors="coerce").max() if len(epochs) else None
    cols[2].metric("Best val acc", pct(best))
    cols[3].metric("Test acc", pct(run.test_accuracy))
    cols[4].metric("Time", format_duration(duration_s(run.__dict__)) or "–")
    where = phase_text(run)
    if where is not None:
        text = plain(where + (f" · {run.device}" if run.device else ""))
        if run.progress_batches and run.phase in ("training", "testing"):
            st.progress(min((run.progress_batch or 0) / run.progress_batches, 1.0), text=text)
        else:
            st.caption(text)
    elif run.status == RunStatus.QUEUED:
        st.info("Queued: waits for a free worker slot." + (
            f" It resumes after epoch {run.resume_epoch}." if run.resume_epoch else ""))
    if status == CANCELLING:
        if run.cancel_mode == CancelMode.NOW:
            st.warning(f"**{CANCELLING}** Asked to stop now: the epoch in progress is discarded; "
                       "the finished epochs stay.")
        else:
            st.warning(f"**{CANCELLING}** Asked to stop after the current epoch: that epoch is "
                       "kept, then the run ends as cancelled.")
    if run.error and run.status != RunStatus.COMPLETED:
        box = st.warning if run.status == RunStatus.CANCELLED else st.error
        box(f"**{run.status}**: {plain(run.error)}")
        if run.traceback:
            with st.expander("Traceback"):
                st.code(run.traceback)
    if run.notes:
        st.caption("  \n".join(plain(line) for line in run.notes.splitlines() if line.strip()))
    if len(epochs):
        st.plotly_chart(curves_figure(epochs, {run.id: run.label}), key="run_curves",
                        config={"displaylogo": False})
    else:
        st.caption("No finished epoch yet: the curves appear when the first epoch ends.")


def after_cancel(run_id: int, status: RunStatus, asked: str) -> None:
    """Toast what the request did (the run may have moved on since the page was drawn), rerun."""
    if status == RunStatus.RUNNING:
        st.session_state[FLASH] = f"Run #{run_id}: {asked}"
    else:
        st.session_state[FLASH] = f"Run #{run_id} is {status}"
    st.rerun()


def open_dialog(kind: str, run_id: int) -> None:
    st.session_state[DIALOG] = (kind, run_id)
    st.rerun()  # a full rerun: the dialog is opened by the script, outside the live parts


def close_dialog() -> None:
    st.session_state.pop(DIALOG, None)


def actions(run: Run) -> None:
    row = st.container(horizontal=True)  # the buttons side by side, from the left
    if run.status == RunStatus.QUEUED:
        if row.button("Cancel", key=f"cancel_{run.id}",
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
                      help="Stops at once; the epoch in progress is discarded (asks first)"):
            open_dialog("stop_now", run.id)
    if row.button("Retry", key=f"retry_{run.id}", help="A new run with the same config"):
        new_id = retry(engine, run.id)
        st.session_state[FORCE] = new_id
        st.session_state[FLASH] = f"Queued run #{new_id} with the same config"
        st.rerun()
    if row.button("Delete…", key=f"delete_{run.id}", disabled=run.status == RunStatus.RUNNING,
                  help="Delete the run and its epochs, after asking (stop a running run first)"):
        open_dialog("delete", run.id)


def run_words(run: Run, epochs_done: int) -> str:
    """`run #3 · my name: BN 1·1·0·0·1 · drop 0.5 on synthetic, 2 of 10 epochs recorded`."""
    name = f" · {plain(run.name)}" if run.name else ""
    return (f"**run #{run.id}**{name}: {plain(run.label)} on {plain(run.dataset)}, "
            f"{epochs_done} of {run.epochs} epochs recorded")


def epochs_done_of(run_id: int) -> int:
    return read_models.epoch_counts(engine, [run_id]).get(run_id, 0)


def gone(run_id: int, run: Run | None, what: str) -> None:
    st.info(f"Run #{run_id} is {run.status if run else 'deleted'} now: {what}.")
    if st.button("Close", key="dialog_close"):
        close_dialog()
        st.rerun()


@st.dialog("Stop this run now?", on_dismiss=close_dialog)
def confirm_stop_now(run_id: int) -> None:
    run = runs.find_run(engine, run_id)
    if run is None or run.status != RunStatus.RUNNING:
        gone(run_id, run, "there is nothing to stop")
        return
    done = epochs_done_of(run_id)
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


@st.dialog("Delete this run?", on_dismiss=close_dialog)
def confirm_delete(run_id: int) -> None:
    run = runs.find_run(engine, run_id)
    if run is None or run.status == RunStatus.RUNNING:
        gone(run_id, run, "it cannot be deleted" if run else "nothing to delete")
        return
    done = epochs_done_of(run_id)
    st.markdown(f"Delete {run_words(run, done)} (status {run.status})?")
    kept = [f"its log file {plain(run.log_path)}" if run.log_path else "",
            f"its checkpoint {plain(run.checkpoint_path)}" if run.checkpoint_path else ""]
    kept_text = " and ".join(k for k in kept if k)
    st.markdown("This removes from the database the run, its recorded epochs and per-layer "
                "norms, and its test results. It cannot be undone."
                + (f" Kept on disk: {kept_text}." if kept_text else ""))
    a, b = st.columns(2)
    if a.button(f"Delete run #{run_id}", type="primary", key="confirm_delete"):
        try:
            runs.delete_run(engine, run_id)
        except (ValueError, RunNotFound) as exc:  # it started, or went, since the dialog opened
            st.error(plain(exc))
            return
        EPOCH_CACHE.forget(engine, run_id)
        st.session_state[FORCE] = None
        st.session_state[DELETED] = run_id
        st.session_state[FLASH] = f"Run #{run_id} deleted"
        close_dialog()
        st.rerun()
    if b.button("Keep it", key="dialog_close"):
        close_dialog()
        st.rerun()


table()
if not listing.rows:
    st.info("No run matches these filters.")
elif (chosen_run := picked()) is not None:
    show_run(chosen_run)
if pending := st.session_state.get(DIALOG):
    kind, pending_id = pending
    (confirm_stop_now if kind == "stop_now" else confirm_delete)(pending_id)
