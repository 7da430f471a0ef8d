"""The Runs page's session-state bookkeeping: the keys it keeps in `st.session_state`, the view in
the URL (`?run=3&status=completed&where=dropout+>%3D+0.3`, read through `st.query_params` whenever
it differs from what the page last wrote there, so a reload or a pasted link shows the same view,
and restored from the session when a page switch comes back without parameters), the table's
selection (`runs_selected`, with a generation number in the table's key that resets the selection
shown in the browser), which confirmation dialog is open (`runs_dialog`, so it survives the live
refresh and any full rerun) and the message to toast on the next run. Only functions and
constants: nothing runs at import.
"""

from __future__ import annotations

import re

import streamlit as st

from cnn_ablation.storage.listings import SORTS
from cnn_ablation.storage.run_filters import RunFilter, parse_condition
from cnn_ablation.storage.status import RunStatus

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


def toast_flash() -> None:
    """Toast the message(s) the last run left for this one (FLASH)."""
    flash = st.session_state.pop(FLASH, None)
    for message in [flash] if isinstance(flash, str) else flash or []:
        st.toast(message)


def first_page() -> None:
    st.session_state[PAGE] = 1


def url_now() -> dict[str, list[str]]:
    """This page's parameters in the URL, as lists (a key may repeat: `status=a&status=b`)."""
    return {k: list(st.query_params.get_all(k)) for k in URL_KEYS if st.query_params.get_all(k)}


def read_url(datasets: list[str], tags: list[str]) -> list[str]:
    """Set the filters and the run to open from the URL when it differs from what this page last
    wrote there (a pasted link, ?run=N, a reload), or from the session's last view when a page
    switch comes back without parameters; the link's problems, once each."""
    in_url = url_now()
    if in_url and in_url != st.session_state.get(URL_WRITTEN):  # a pasted link, ?run=N, a reload
        apply_url(in_url, datasets, tags)
    elif not in_url and st.session_state.get(URL_WRITTEN) and "filter_status" not in st.session_state:
        apply_url(st.session_state[URL_WRITTEN], datasets, tags)  # back from a page
    return list(st.session_state.pop("url_problems", []))


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


def write_url(run_id: int | None, filters: RunFilter, sort: str) -> None:
    """The view in the URL (only this page's keys; a key that is unchanged is left alone)."""
    wanted: dict[str, list[str]] = {}
    if run_id is not None:
        wanted["run"] = [str(run_id)]
    for key, values in (("status", filters.statuses), ("dataset", filters.datasets),
                        ("tag", filters.tags),
                        ("where", [" ".join(c) for c in filters.conditions])):
        if values:
            wanted[key] = [str(v) for v in values]
    if filters.text.strip():
        wanted["q"] = [filters.text]
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


def select_rows(ids: list[int]) -> None:
    """Show `ids` as the table's selection (a new table key: the browser's selection resets)."""
    st.session_state[SELECTED] = list(ids)
    st.session_state[TABLE_GEN] = st.session_state.get(TABLE_GEN, 0) + 1


def open_dialog(kind: str, target: int | tuple[int, ...]) -> None:
    st.session_state[DIALOG] = (kind, target)
    st.rerun()  # a full rerun: the dialog is opened by the script, outside the live parts


def close_dialog() -> None:
    st.session_state.pop(DIALOG, None)
