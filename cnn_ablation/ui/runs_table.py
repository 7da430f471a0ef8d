"""The Runs page's table, its pager and the run picker: a page of 50 runs (filtered, sorted and
paged in SQL by storage.listings through the shared cache `common.runs_page`), redrawn while runs
are active only when the database's change token moves; a click on a row opens that run, several
selected rows get the bulk actions (their ids mirrored in session state by
cnn_ablation/ui/runs_state.py); the pager says which runs show; the picker says which run's panel
is open below.
"""

from __future__ import annotations

from dataclasses import astuple, replace
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from cnn_ablation.storage import listings, polling
from cnn_ablation.storage.listings import RunsPage
from cnn_ablation.storage.run_filters import RunFilter
from cnn_ablation.ui import common
from cnn_ablation.ui.common import TABLE_COLUMNS, run_option, runs_table
from cnn_ablation.ui.runs_state import (
    DELETED,
    FORCE,
    PAGE,
    SELECT,
    SELECTED,
    TABLE_GEN,
    TABLE_IDS,
    select_rows,
)

COLUMNS = {**TABLE_COLUMNS,
           "name": st.column_config.TextColumn("name or config", width=200),
           "epoch": st.column_config.TextColumn(width=80),
           "tags": st.column_config.ListColumn(width="small"),
           # wide enough for their headers
           "best val acc": st.column_config.NumberColumn(format="%.1f %%", width=105),
           "final val acc": st.column_config.NumberColumn(format="%.1f %%", width=100)}
COLUMN_ORDER = ["run", "name", "status", "epoch", "progress", "best val acc", "final val acc",
                "test acc", "tags", "config", "dataset", "duration", "device"]
# What shows unless the user picks other columns: every one fits an 800 px window (the table is
# about 740 px wide), so nothing the user needs first hides past the edge; "Columns" adds the
# rest (a wide screen has room for all but one or two).
DEFAULT_COLUMNS = ["run", "name", "status", "epoch", "final val acc", "test acc", "duration"]
PICKED = "runs_columns"


def column_picker() -> list[str]:
    """The "Columns" control above the table: which of COLUMN_ORDER show (kept for the session
    and in the page's link). Returns them in the table's order."""
    with st.popover("Columns", icon=":material/view_column:"):
        picked = st.multiselect("Columns shown", [c for c in COLUMN_ORDER if c != "run"],
                                default=[c for c in DEFAULT_COLUMNS if c != "run"], key=PICKED,
                                persist_state="session", bind="query-params",
                                help="The defaults fit an 800 px window; more may need "
                                     "scrolling sideways on a narrow one.")
    return ["run", *[c for c in COLUMN_ORDER if c in picked]]


def table_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = runs_table(pd.DataFrame(rows))
    frame["tags"] = [list(tags_of(r.get("tags_json"))) for r in rows]
    # a run without a name is named by its config, so the config column can stay hidden
    frame["name"] = [name or config for name, config in zip(frame["name"], frame["config"],
                                                             strict=True)]
    return frame


def tags_of(text: object) -> tuple[str, ...]:
    import json

    return tuple(json.loads(text)) if isinstance(text, str) and text else ()


def table(engine: Engine, url: str, filters: RunFilter, sort: str, listing: RunsPage,
          active_now: bool, columns: list[str] | None = None) -> None:
    """The page of runs. While runs are active it asks the database one indexed question every
    REFRESH_S; the page comes from a cache shared by all sessions and keyed by the answer, so it
    is read again only when something changed. A click on a row opens that run (a full rerun:
    the run's panel is outside this fragment); several selected rows get the bulk actions."""
    now = polling.change_token(engine)
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
                         column_order=columns or DEFAULT_COLUMNS, placeholder="–",
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
    pager(shown, sort)


def pager(page: RunsPage, sort: str) -> None:
    """Which runs are shown: `runs 51–100 of 10,000`, and the page number to show."""
    if page.pages == 1:
        st.caption(f"{page.total:,} run{'s' if page.total != 1 else ''}, {sort}")
        return
    st.session_state[PAGE] = page.page  # clamped: the filters may have left fewer pages
    left, right = st.columns([1, 5], vertical_alignment="bottom")
    left.number_input(f"Page (of {page.pages:,})", min_value=1, step=1, key=PAGE)
    last = page.first + len(page.rows) - 1
    right.caption(f"Runs {page.first:,}–{last:,} of {page.total:,}, {sort}")


def picked(engine: Engine, listing: RunsPage, filters: RunFilter) -> int | None:
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
        elsewhere = listings.run_rows(engine, replace(filters, ids=(int(chosen),)))
        records = {**{r["id"]: r for r in elsewhere}, **records}
    if chosen not in records:
        if chosen is not None and deleted is None:  # a link or a choice that no run answers
            st.warning(f"Run #{chosen} does not exist here (deleted, or a link from another "
                       "database); showing the newest run instead.")
        chosen = None if deleted is not None else max(records)
    st.session_state[SELECT] = chosen
    run_id = st.selectbox("Run", list(records), key=SELECT,
                          format_func=lambda i: run_option(records[i]),
                          placeholder="Pick a run to see its curves and actions")
    st.session_state["run_choice"] = run_id
    if run_id is not None:
        st.session_state.pop(DELETED, None)
    return run_id
