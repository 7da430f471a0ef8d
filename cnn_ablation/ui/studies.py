"""Studies: an ablation as one object. Start one (presets or factors, every run setting, a fixed
number of seeds or adaptive seeds), watch its grid of cells x seeds, cancel or delete it, and read
the result: per-cell mean ± spread, effects with 95 % intervals and Holm-adjusted verdicts (only
once every run is in), seeds needed for a chosen effect size, and the report files.

This file is the page, top to bottom; its parts are modules beside it: the "Start a study" tab is
studies_form.py, the results of one study (progress, grid, buttons, tables, curves, report files)
studies_results.py, and the session-state bookkeeping (the study on screen, the `?study=N` link,
the study just deleted) studies_state.py."""

from __future__ import annotations

import streamlit as st

from cnn_ablation.storage.polling import any_active
from cnn_ablation.storage.studies import list_studies
from cnn_ablation.studies import grid as study_grid
from cnn_ablation.ui import preload, studies_state
from cnn_ablation.ui.common import REFRESH_S, engine_or_stop, keep, restore, worker_banner
from cnn_ablation.ui.studies_form import start_form
from cnn_ablation.ui.studies_results import show_study

engine = engine_or_stop()
worker_banner(engine)
st.title("Studies")
st.caption("A study runs every combination of your switches with several seeds, so each effect "
           "comes with its uncertainty: a difference smaller than the seed-to-seed spread is noise.")

existing = list_studies(engine)
# The tab the user was on when they left the page is the one they come back to (Streamlit drops
# a tab's state with its page; common.restore/keep hold a plain copy, as for the chart controls);
# the first visit opens on Results when there is a study to show.
restore(studies_state.TAB, "Results" if existing else "Start a study")
start_tab, view_tab = st.tabs(["Start a study", "Results"], key=studies_state.TAB,
                              on_change="rerun")
keep(studies_state.TAB)

# Only the open tab is drawn (a tab switch reruns the page): the form's two dozen widgets cost
# a new session's first Results a third of a second on the server and in the browser.
if start_tab.open:
    with start_tab:
        start_form(engine)

existing = list_studies(engine)
if not view_tab.open:
    st.stop()
with view_tab:
    studies_state.announce_deleted()
    if not existing:
        st.info("No studies yet: start one in **Start a study**.")
        st.stop()
    ids = [s.id for s in existing]
    names = {s.id: s.name for s in existing}
    chosen = studies_state.chosen_study(ids)
    study_id = st.selectbox("Study", ids, index=ids.index(chosen),
                            format_func=lambda i: f"#{i} {names[i]}")
    studies_state.show(study_id)
    first = study_grid.load(engine, study_id)
    adaptive_going = first.spec.adaptive is not None and not first.spec.adaptive.stopped
    active = adaptive_going or any_active(engine, [c.config_hash for _, c in first.spec.runs()])

    # a new browser session: the tables first, then the curves (preload.py)
    charts = preload.charts_now()
    study_view = st.fragment(show_study, run_every=REFRESH_S if active or not charts else None)
    study_view(engine, study_id, adaptive_going, charts)
    if not charts:
        preload.after_tables()
