"""The Runs page's filters: the status, dataset, tag, text and sort row, and the expander of config
conditions (`dropout >= 0.3`, added and removed one at a time) and metric ranges, drawn from and
kept in session state (the URL's view, set by cnn_ablation/ui/runs_state.py before they are
drawn), turned into the `RunFilter` and sort the listing is read with. Any change goes back to
the listing's first page.
"""

from __future__ import annotations

from typing import Literal

import streamlit as st

from cnn_ablation.storage.listings import SORTS
from cnn_ablation.storage.run_filters import CONDITION_OPS, RunFilter, check_condition
from cnn_ablation.storage.status import RunStatus
from cnn_ablation.ui.common import plain
from cnn_ablation.ui.runs_state import CONDITIONS, RANGES, first_page

CONFIG_FIELDS = ["dropout", "bn", "bn_off", "learning_rate", "batch_size", "epochs", "seed",
                 "dataset", "preset", "limit_train", "val_split", "network", "optimizer"]
SHOWN_OPS = {"<=": "≤", ">=": "≥", "!=": "≠"}  # how a condition's button reads
MORE_OPEN = "runs_more_filters_open"  # the expander's own state: open or not
KEEP: Literal["session"] = "session"  # its widgets' values outlive it being closed


def filters_bar(dataset_options: list[str], tag_options: list[str]) -> tuple[RunFilter, str]:
    """Draw the filters; (which runs the listing holds, its sort)."""
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
    conditions, metric_ranges = more_filters()
    filters = RunFilter(statuses=tuple(statuses), datasets=tuple(chosen_sets), text=text,
                        tags=tuple(chosen_tags), conditions=tuple(conditions),
                        metrics=metric_ranges)
    return filters, sort


def more_filters() -> tuple[list[tuple[str, str, str]],
                            tuple[tuple[str, float | None, float | None], ...]]:
    """The expander of config conditions and metric ranges; (the conditions, the ranges as
    fractions, an open end None)."""
    conditions: list[tuple[str, str, str]] = list(st.session_state.setdefault(CONDITIONS, []))
    ranges = {key: st.session_state.get(key, (0.0, 100.0)) for key, _, _ in RANGES.values()}
    active_more = len(conditions) + sum(r != (0.0, 100.0) for r in ranges.values())
    # Its widgets are drawn only while it is open (their values kept meanwhile: persist_state):
    # closed, they cost a new session's first table the code of five widget kinds. Its label and
    # arguments stay the same (they are its identity: a change would close it under the user's
    # hands); filters that came with a link open it the first time.
    if active_more and MORE_OPEN not in st.session_state:
        st.session_state[MORE_OPEN] = True
    box = st.expander("Filter by config field or metric", key=MORE_OPEN, on_change="rerun")
    if box.open:
        _more_widgets(box, conditions)
    elif active_more:
        st.caption(f"{active_more} config or metric filter{'s' if active_more > 1 else ''} "
                   "active: open the filters above to see or change them.")
    metric_ranges = tuple((metric, low / 100 if low > 0 else None,
                           high / 100 if high < 100 else None)
                          for key, metric, _ in RANGES.values()
                          for low, high in [st.session_state.get(key, (0.0, 100.0))]
                          if (low, high) != (0.0, 100.0))
    return conditions, metric_ranges


def _more_widgets(box, conditions: list[tuple[str, str, str]]) -> None:
    with box:
        w1, w2, w3, w4 = st.columns([2, 1.3, 2, 1.2], vertical_alignment="bottom")
        w1.selectbox("Config field", CONFIG_FIELDS, key="where_field", accept_new_options=True,
                     persist_state=KEEP,
                     help="Any field of a run's config; type one that is not listed")
        w2.selectbox("Operator", CONDITION_OPS, key="where_op", persist_state=KEEP)
        w3.text_input("Value", key="where_value", placeholder="e.g. 0.3, adam, conv_3",
                      persist_state=KEEP)
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
                          help="Only runs whose value lies in this range (the full range: no "
                               "filter)", persist_state=KEEP)


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
