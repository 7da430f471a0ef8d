"""Runs: every run with its status and progress; one run's live curves, config and actions.

This file is the page, top to bottom; its parts are modules beside it: the session-state
bookkeeping (URL state, selection, which dialog is open) is runs_state.py, the filters
runs_filters.py, the table, pager and run picker runs_table.py, the run's action buttons, the bulk
actions and the confirmation dialogs run_actions.py. The view of the one run on screen (status,
curves, log, labels form, config, diagnostics) is run_view.py.

The table is a page of 50 runs, filtered, sorted and paged in SQL (storage.listings), so the
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

from dataclasses import astuple

import streamlit as st

from cnn_ablation.storage import lookups, polling
from cnn_ablation.ui import common, preload, run_actions, run_view, runs_state, runs_table
from cnn_ablation.ui.common import REFRESH_S, engine_or_stop, plain, worker_banner
from cnn_ablation.ui.runs_filters import filters_bar
from cnn_ablation.ui.runs_state import FLASH, PAGE, SELECTED

engine = engine_or_stop()
worker_banner(engine)
st.title("Runs")
runs_state.toast_flash()

url = common.database_key(engine)
token = polling.change_token(engine)  # one indexed query: is there anything, what changed
if not token.any_runs:
    st.info("No runs yet. Build a variant on the **New run** page and launch it; it shows up "
            "here and trains in the background.")
    st.page_link(common.page_file("new_run"), label="New run", icon=":material/science:")
    st.stop()

dataset_options = common.datasets_in_use(url, token.runs_version)
tag_options = lookups.tags_in_use(engine)
for problem in runs_state.read_url(dataset_options, tag_options):
    st.error(f"The link's {plain(problem)}")

filters, sort = filters_bar(dataset_options, tag_options)
active_now = token.active > 0
listing = common.runs_page(url, tuple(token), astuple(filters), sort,
                           int(st.session_state.get(PAGE, 1)))

shown_columns = runs_table.column_picker()
live_table = st.fragment(runs_table.table, run_every=REFRESH_S if active_now else None)
live_table(engine, url, filters, sort, listing, active_now, shown_columns)
if len(st.session_state.get(SELECTED, [])) >= 2:
    run_actions.bulk_actions(engine, st.session_state[SELECTED])
chosen_run = None
charts = preload.charts_now()  # a new browser session: the table first, then the curves
if not listing.rows:
    st.info("No run matches these filters.")
elif (chosen_run := runs_table.picked(engine, listing, filters)) is not None:
    run_view.show_run(engine, chosen_run, tag_options=tag_options,
                      actions=lambda run: run_actions.actions(engine, run), flash=FLASH,
                      charts=charts)
runs_state.write_url(chosen_run, filters, sort)
run_actions.open_pending_dialog(engine)
if not charts:
    preload.after_tables()
