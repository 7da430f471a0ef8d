"""The Studies page's session-state bookkeeping: the study on screen (`study_choice`, kept across
reruns and set when a study is started), the study a link names (`?study=N`, read once per
session, then written back so the address names the study shown), and the study just deleted,
announced once on the next run. Only functions and constants: nothing runs at import."""

from __future__ import annotations

import re

import streamlit as st

from cnn_ablation.ui.common import plain

CHOICE = "study_choice"  # the study on screen (the picker's choice, or the one just started)
DELETED = "study_deleted"  # the study just deleted: announced once on the next run
LINK_READ = "study_link_read"  # the link's ?study=N has been read in this session


def announce_deleted() -> None:
    """Say that a study was deleted, once, on the run after its Delete button."""
    deleted = st.session_state.pop(DELETED, None)
    if deleted:
        st.success(f"Study #{deleted} deleted.")


def forget_deleted(study_id: int) -> None:
    """After a delete: nothing chosen, and the next run says which study went."""
    st.session_state.pop(CHOICE, None)
    st.session_state[DELETED] = study_id


def chosen_study(ids: list[int]) -> int:
    """The study to show of `ids`: on a session's first visit the one its link names, else the
    one picked before, else the latest; a link naming no study is said, not followed."""
    chosen = st.session_state.get(CHOICE)
    linked = st.query_params.get("study")  # ?study=N: a reload or a pasted link shows study N
    first_visit = not st.session_state.get(LINK_READ)
    st.session_state[LINK_READ] = True  # once per session: then the picker rules (the
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
    return chosen if chosen in ids else ids[-1]


def show(study_id: int) -> None:
    """Keep `study_id` as the study on screen, and name it in the address."""
    st.session_state[CHOICE] = study_id
    if st.query_params.get("study") != str(study_id):
        st.query_params["study"] = str(study_id)  # the address names the study shown


TAB = "studies_tab"  # the tabs' own state: the label of the open tab (kept by common.keep)
