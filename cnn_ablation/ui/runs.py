"""Runs: every run with its status and progress; one run's live curves, config and actions.

This file is the page: URL state, filters, the table, bulk actions, the run's action buttons and
the confirmation dialogs. The view of the one run on screen (status, curves, log, labels form,
config, diagnostics) is cnn_ablation/ui/run_view.py, which this page calls.

The table is a page of 50 runs, filtered, sorted and paged in SQL (storage.read_models), so the
page costs the same with 10 runs or 10,000. While runs are active, the live part asks the
database one indexed question every second (has anything changed?) and reads again only what
did: the page of runs through a cache shared by every session, the chosen run's new epochs
through the shared epoch cache.

Filters (status, dataset, tags, text, config conditions such as `dropout >= 0.3`, metric
ranges) and the run on screen live in the URL (`?run=3&status=completed&where=dropout+>%3D+0.3`),
so a reload or a pasted link shows the same view. The URL is read whenever it differs from what
this page last wrote there (a pasted link, `?run=N` from New run), on every load, not just the
first; a page switch back without parameters restores the session's last view.

Clicking a row opens the run; several selected rows get bulk Cancel / Delete / Compare. The
table's selection is mirrored in session state (`runs_selected`, run ids); a generation number
in the table's key resets the selection shown in the browser when the page changes it (after a
delete, a pasted link, new rows moving the old ones).

Stop now and Delete ask first, in a dialog. Which dialog is open lives in session_state
(`runs_dialog`): a button sets it and reruns the app, the script opens the dialog while it is set,
and confirming, "Keep ..." or dismissing it clears it. So the dialog survives the live refresh and
any full rerun, and AppTest (which reruns the whole script on every click) can drive it too.
"""

from __future__ import annotations

import re
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from cnn_ablation.jobs.launch import delete_runs, retry, run_files
from cnn_ablation.ui import common, run_view
from cnn_ablation.ui.common import (
    REFRESH_S,
    TABLE_COLUMNS,
    engine_or_stop,
    plain,
    run_option,
    runs_table,
    worker_banner,
)
from storage import curves, lifecycle, read_models, runs
from storage.curves import EPOCH_CACHE
from storage.read_models import SORTS, RunsPage
from storage.records import Run, RunNotFound
from storage.run_filters import CONDITION_OPS, RunFilter, check_condition, parse_condition
from storage.status import CancelMode, RunStatus

DIALOG = "runs_dialog"  # ("stop_now", run id) | ("delete", (run ids)) while a confirmation is open
FLASH = "runs_flash"  # a message to toast on the next run (a toast before st.rerun is lost)
DELETED = "run_deleted"  # the run just deleted: nothing is selected until the user picks one
SELECT = "run_select"  # the run picker's key; `run_choice` mirrors it (and outlives it)
FORCE = "run_force"  # a run to select on the next run (set by Retry, Delete, a row click, the URL)
PAGE = "runs_page"  # the listing's page number (1-based)
SELECTED = "runs_selected"  # run ids selected in the table (bulk actions)
TABLE_GEN = "runs_table_gen"  # part of the table's key: a new number resets its selection
TABLE_IDS = "runs_table_ids"  # the run ids of the table's rows as last drawn
CONDITIONS = "filter_conditions"  # [(field, op, value)] config conditions (plain session state)
URL_WRITTEN = "runs_url_written"  # what this page last wrote to the URL (plain session state)
URL_KEYS = ("run", "status", "dataset", "tag", "q", "where", "best", "test", "sort")
RANGES = {"best": ("filter_best", "best_val_accuracy", "Best val acc (%)"),
          "test": ("filter_test", "test_accuracy", "Test acc (%)")}
CONFIG_FIELDS = ["dropout", "bn", "bn_off", "learning_rate", "batch_size", "epochs", "seed",
                 "dataset", "preset", "limit_train", "val_split", "network", "optimizer"]
SHOWN_OPS = {"<=": "≤", ">=": "≥", "!=": "≠"}  # how a condition's button reads

engine = engine_or_stop()
worker_banner(engine)
st.title("Runs")
flash = st.session_state.pop(FLASH, None)
for message in [flash] if isinstance(flash, str) else flash or []:
    st.toast(message)

url = common.database_key(engine)
token = read_models.change_token(engine)  # one indexed query: is there anything, what changed
if token.runs == 0:
    st.info("No runs yet. Build a variant on the **New run** page and launch it; it shows up "
            "here and trains in the background.")
    st.page_link("cnn_ablation/ui/new_run.py", label="New run", icon=":material/science:")
    st.stop()


def first_page() -> None:
    st.session_state[PAGE] = 1


def url_now() -> dict[str, list[str]]:
    """This page's parameters in the URL, as lists (a key may repeat: `status=a&status=b`)."""
    return {k: list(st.query_params.get_all(k)) for k in URL_KEYS if st.query_params.get_all(k)}


def percent_range(text: str) -> tuple[float, float] | None:
    """`30-80` (percent) as (30.0, 80.0); None when it is not such a range."""
    low, _, high = text.partition("-")
    try:
        a, b = float(low), float(high)
    except ValueError:
        return None
    return (max(0.0, min(a, b)), min(100.0, max(a, b)))


def apply_url(state: dict[str, list[str]], datasets: list[str], tags: list[str]) -> None:
    """Set the filters (and the run to open) from URL parameters, before their widgets are
    drawn. Values that are not allowed are left out and said so once (`url_problems`)."""
    problems = []
    statuses = [s for s in state.get("status", []) if s in list(RunStatus)]
    st.session_state["filter_status"] = statuses
    st.session_state["filter_dataset"] = [d for d in state.get("dataset", []) if d in datasets]
    st.session_state["filter_tags"] = [t.lower() for t in state.get("tag", [])
                                       if t.lower() in tags]
    problems += [f"tag: {t!r} is not a tag of any run" for t in state.get("tag", [])
                 if t.lower() not in tags]
    st.session_state["filter_text"] = (state.get("q") or [""])[0]
    conditions = []
    for text in state.get("where", []):
        try:
            conditions.append(parse_condition(text))
        except ValueError as exc:
            problems.append(str(exc))
    st.session_state[CONDITIONS] = conditions
    for name, (key, _, _) in RANGES.items():
        given = (state.get(name) or [""])[0]
        shown = percent_range(given) if given else None
        if given and shown is None:
            problems.append(f"{name}: {given!r} is not allowed; allowed: a percent range "
                            "such as 30-80")
        st.session_state[key] = shown or (0.0, 100.0)
    sort = (state.get("sort") or ["newest first"])[0]
    st.session_state["runs_sort"] = sort if sort in SORTS else "newest first"
    st.session_state[PAGE] = 1
    run = (state.get("run") or [""])[0]
    if re.fullmatch(r"[0-9]{1,18}", run):  # not isdigit(): "²" is a digit int() refuses
        st.session_state[FORCE] = int(run)
        st.session_state.pop(DELETED, None)
    elif run:
        problems.append(f"run: {run!r} is not allowed; allowed: a run id such as run=3")
    st.session_state[SELECTED] = []
    st.session_state[TABLE_GEN] = st.session_state.get(TABLE_GEN, 0) + 1
    st.session_state["url_problems"] = problems


def write_url(run_id: int | None) -> None:
    """The view in the URL (only this page's keys; a key that is unchanged is left alone)."""
    wanted: dict[str, list[str]] = {}
    if run_id is not None:
        wanted["run"] = [str(run_id)]
    for key, values in (("status", statuses), ("dataset", chosen_sets), ("tag", chosen_tags),
                        ("where", [" ".join(c) for c in conditions])):
        if values:
            wanted[key] = [str(v) for v in values]
    if text.strip():
        wanted["q"] = [text]
    for name, (key, _, _) in RANGES.items():
        low, high = st.session_state.get(key, (0.0, 100.0))
        if (low, high) != (0.0, 100.0):
            wanted[name] = [f"{low:g}-{high:g}"]
    if sort != "newest first":
        wanted["sort"] = [sort]
    for key in URL_KEYS:
        if key in wanted and st.query_params.get_all(key) != wanted[key]:
            st.query_params[key] = wanted[key]
        elif key not in wanted and key in st.query_params:
            del st.query_params[key]
    st.session_state[URL_WRITTEN] = wanted


dataset_options = common.datasets_in_use(url, token.runs_version)
tag_options = read_models.tags_in_use(engine)
in_url = url_now()
if in_url and in_url != st.session_state.get(URL_WRITTEN):  # a pasted link, ?run=N, a reload
    apply_url(in_url, dataset_options, tag_options)
elif not in_url and st.session_state.get(URL_WRITTEN) and "filter_status" not in st.session_state:
    apply_url(st.session_state[URL_WRITTEN], dataset_options, tag_options)  # back from a page
for problem in st.session_state.pop("url_problems", []):
    st.error(f"The link's {plain(problem)}")

f1, f2, f3 = st.columns(3)
statuses = f1.multiselect("Status", list(RunStatus), key="filter_status",
                          placeholder="all statuses", on_change=first_page)
chosen_sets = f2.multiselect("Dataset", dataset_options, key="filter_dataset",
                             placeholder="all datasets", on_change=first_page)
chosen_tags = f3.multiselect("Tags", tag_options, key="filter_tags", placeholder="any tags",
                             on_change=first_page, help="Runs carrying every tag chosen")
g1, g2 = st.columns([3, 1.4])
text = g1.text_input("Find", key="filter_text", placeholder="in the name or config",
                     on_change=first_page)
sort = g2.selectbox("Sort", list(SORTS), key="runs_sort", on_change=first_page)
conditions: list[tuple[str, str, str]] = list(st.session_state.setdefault(CONDITIONS, []))
ranges = {key: st.session_state.get(key, (0.0, 100.0)) for key, _, _ in RANGES.values()}
active_more = len(conditions) + sum(r != (0.0, 100.0) for r in ranges.values())


def add_condition() -> None:
    """The field/op/value row's Add: the condition joins the filters, or its error shows."""
    try:
        condition = check_condition(
            st.session_state.get("where_field") or "", st.session_state.get("where_op") or "=",
            st.session_state.get("where_value") or "")
    except ValueError as exc:
        st.session_state["where_error"] = str(exc)
        return
    st.session_state.pop("where_error", None)
    if condition not in st.session_state[CONDITIONS]:
        st.session_state[CONDITIONS] = [*st.session_state[CONDITIONS], condition]
    st.session_state["where_value"] = ""
    first_page()


def remove_condition(condition: tuple[str, str, str]) -> None:
    st.session_state[CONDITIONS] = [c for c in st.session_state[CONDITIONS] if c != condition]
    first_page()


with st.expander("Filter by config field or metric" + (f" ({active_more} active)"
                                                       if active_more else ""),
                 expanded=bool(active_more)):
    w1, w2, w3, w4 = st.columns([2, 1.3, 2, 1.2], vertical_alignment="bottom")
    w1.selectbox("Config field", CONFIG_FIELDS, key="where_field", accept_new_options=True,
                 help="Any field of a run's config; type one that is not listed")
    w2.selectbox("Operator", CONDITION_OPS, key="where_op")
    w3.text_input("Value", key="where_value", placeholder="e.g. 0.3, adam, conv_3")
    w4.button("Add", key="where_add", icon=":material/add:", on_click=add_condition)
    if error := st.session_state.get("where_error"):
        st.error(plain(error))
    if conditions:
        chips = st.container(horizontal=True)
        for i, condition in enumerate(conditions):
            field_name, op, value = condition
            shown = f"{field_name} {SHOWN_OPS.get(op, op)} {value}"
            chips.button(plain(shown), key=f"where_remove_{i}",
                         icon=":material/close:",
                         help="Remove this condition", on_click=remove_condition,
                         args=(condition,))
    m1, m2 = st.columns(2)
    for column, (key, _, label) in zip((m1, m2), RANGES.values(), strict=True):
        st.session_state.setdefault(key, (0.0, 100.0))
        column.slider(label, 0.0, 100.0, step=1.0, key=key, on_change=first_page,
                      help="Only runs whose value lies in this range (the full range: no filter)")

metric_ranges = tuple((metric, low / 100 if low > 0 else None, high / 100 if high < 100 else None)
                      for key, metric, _ in RANGES.values()
                      for low, high in [st.session_state.get(key, (0.0, 100.0))]
                      if (low, high) != (0.0, 100.0))
filters = RunFilter(statuses=tuple(statuses), datasets=tuple(chosen_sets), text=text,
                    tags=tuple(chosen_tags), conditions=tuple(conditions), metrics=metric_ranges)
active_now = token.active > 0
listing = common.runs_page(url, tuple(token), astuple(filters), sort,
                           int(st.session_state.get(PAGE, 1)))


COLUMNS = {**TABLE_COLUMNS,
           "name": st.column_config.TextColumn(width=230),
           "epoch": st.column_config.TextColumn(width=110),
           "tags": st.column_config.ListColumn(width="small"),
           # wide enough for their headers
           "best val acc": st.column_config.NumberColumn(format="%.1f %%", width=105),
           "final val acc": st.column_config.NumberColumn(format="%.1f %%", width=110)}
# Name and epoch come first: on a narrow screen they are what shows without scrolling.
COLUMN_ORDER = ["run", "name", "status", "epoch", "progress", "best val acc", "final val acc",
                "test acc", "tags", "config", "dataset", "duration", "device"]


def table_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = runs_table(pd.DataFrame(rows))
    frame["tags"] = [list(tags_of(r.get("tags_json"))) for r in rows]
    return frame


def tags_of(text: object) -> tuple[str, ...]:
    import json

    return tuple(json.loads(text)) if isinstance(text, str) and text else ()


def select_rows(ids: list[int]) -> None:
    """Show `ids` as the table's selection (a new table key: the browser's selection resets)."""
    st.session_state[SELECTED] = list(ids)
    st.session_state[TABLE_GEN] = st.session_state.get(TABLE_GEN, 0) + 1


@st.fragment(run_every=REFRESH_S if active_now else None)
def table() -> None:
    """The page of runs. While runs are active it asks the database one indexed question every
    REFRESH_S; the page comes from a cache shared by all sessions and keyed by the answer, so it
    is read again only when something changed. A click on a row opens that run (a full rerun:
    the run's panel is outside this fragment); several selected rows get the bulk actions."""
    now = read_models.change_token(engine)
    if active_now and now.active == 0:
        st.rerun()  # nothing left to watch: a full rerun turns the timers off
    shown = common.runs_page(url, tuple(now), astuple(filters), sort,
                             int(st.session_state.get(PAGE, 1)))
    if [r["id"] for r in shown.rows] != [r["id"] for r in listing.rows]:
        st.rerun()  # other runs on the page (new ones, another page): the picker follows
    if not shown.rows:
        return
    ids = [r["id"] for r in shown.rows]
    selected = [i for i in st.session_state.get(SELECTED, []) if i in ids]
    drawn = st.session_state.get(TABLE_IDS)
    if drawn is not None and drawn != ids and selected:
        select_rows(selected)  # rows moved: the browser's selection would point at others
    elif drawn is None or drawn != ids:
        st.session_state[TABLE_GEN] = st.session_state.get(TABLE_GEN, 0) + 1
    drawn = ids
    st.session_state[TABLE_IDS] = ids
    default: Any = {"selection": {"rows": [ids.index(i) for i in selected]}} if selected \
        else None
    event = st.dataframe(table_frame(shown.rows), hide_index=True, column_config=COLUMNS,
                         column_order=COLUMN_ORDER, placeholder="–",
                         key=f"runs_table_{st.session_state.get(TABLE_GEN, 0)}",
                         on_select="rerun", selection_mode=["multi-row", "single-cell"],
                         selection_default=default)
    cells = [drawn[row] for row, _ in event.selection.cells if 0 <= row < len(drawn)]
    if cells and cells != st.session_state.get("runs_table_cell"):
        st.session_state["runs_table_cell"] = cells
        st.session_state[FORCE] = cells[0]  # a click on a cell opens its run
        st.session_state.pop(DELETED, None)
        st.rerun()
    st.session_state["runs_table_cell"] = cells
    clicked = [drawn[i] for i in event.selection.rows if 0 <= i < len(drawn)]
    before = st.session_state.get(SELECTED, [])
    if sorted(clicked) != sorted(before):
        st.session_state[SELECTED] = clicked
        added = [i for i in clicked if i not in before]
        if added or len(clicked) == 1:
            st.session_state[FORCE] = (added or clicked)[-1]
            st.session_state.pop(DELETED, None)
        st.rerun()  # the run's panel and the bulk actions are drawn outside this fragment
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
    """The run whose details show: a row clicked or the run in the URL (?run=N, links from New
    run; both through FORCE), else the picker's own state, else the last choice (a widget's
    state goes when another page shows), else the newest run on the page. A choice on another
    page of the listing stays chosen."""
    records = {r["id"]: r for r in listing.rows}
    if FORCE in st.session_state:  # Retry or Delete chose (or cleared) the run
        st.session_state[SELECT] = st.session_state.pop(FORCE)
    chosen = st.session_state.get(SELECT, st.session_state.get("run_choice"))
    deleted = st.session_state.get(DELETED)
    if chosen is not None and chosen not in records:
        elsewhere = read_models.run_rows(engine, replace(filters, ids=(int(chosen),)))
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


def after_cancel(run_id: int, status: RunStatus, asked: str) -> None:
    """Toast what the request did (the run may have moved on since the page was drawn), rerun."""
    if status == RunStatus.RUNNING:
        st.session_state[FLASH] = f"Run #{run_id}: {asked}"
    else:
        st.session_state[FLASH] = f"Run #{run_id} is {status}"
    st.rerun()


def open_dialog(kind: str, target: int | tuple[int, ...]) -> None:
    st.session_state[DIALOG] = (kind, target)
    st.rerun()  # a full rerun: the dialog is opened by the script, outside the live parts


def close_dialog() -> None:
    st.session_state.pop(DIALOG, None)


def actions(run: Run) -> None:
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


def epochs_done_of(run_id: int) -> int:
    return curves.epoch_counts(engine, [run_id]).get(run_id, 0)


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
def confirm_delete(run_ids: tuple[int, ...]) -> None:
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


def bulk_actions(selected: list[int]) -> None:
    """What several selected rows can do at once: cancel, delete (asks first), compare."""
    rows = read_models.run_rows(engine, RunFilter(ids=tuple(selected)))
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
        st.switch_page("cnn_ablation/ui/compare.py",
                       query_params={"runs": ",".join(str(r["id"]) for r in rows)})
    if bar.button("Clear", key="bulk_clear", icon=":material/deselect:",
                  help="Select no rows"):
        select_rows([])
        st.rerun()


table()
if len(st.session_state.get(SELECTED, [])) >= 2:
    bulk_actions(st.session_state[SELECTED])
chosen_run = None
if not listing.rows:
    st.info("No run matches these filters.")
elif (chosen_run := picked()) is not None:
    run_view.show_run(engine, chosen_run, tag_options=tag_options, actions=actions, flash=FLASH)
write_url(chosen_run)
if pending := st.session_state.get(DIALOG):
    kind, target = pending
    if kind == "stop_now":
        confirm_stop_now(int(target))
    else:
        confirm_delete(tuple(target) if isinstance(target, (tuple, list)) else (int(target),))
