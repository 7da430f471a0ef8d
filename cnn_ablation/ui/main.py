"""The dashboard's one script body: page config, the access check, navigation. Run on every
rerun by `app.py` (the repository's `streamlit run app.py`) and by `cnn_ablation/ui/dashboard.py`
(the same script inside the installed package, which `cnn-ablation dashboard` serves). Never
imports TensorFlow; training happens in background worker processes (one is started here when
none is alive; ABLATION_START_WORKER=0 turns that off)."""

from __future__ import annotations

import streamlit as st

from cnn_ablation.ui.access import may_enter, require_access
from cnn_ablation.ui.common import page_file
from cnn_ablation.ui.preload import warm_chart_code


def main() -> None:
    st.set_page_config(page_title="cnn-ablation", page_icon=":material/science:", layout="wide",
                       initial_sidebar_state="collapsed")
    # Absolute paths, so the pages are found whichever script runs this (app.py at the
    # repository's root or dashboard.py in the package); their URLs come from the file names.
    pages = [
        st.Page(page_file("new_run"), title="New run", icon=":material/science:", default=True),
        st.Page(page_file("runs"), title="Runs", icon=":material/monitoring:"),
        st.Page(page_file("compare"), title="Compare", icon=":material/compare_arrows:"),
        st.Page(page_file("studies"), title="Studies", icon=":material/grid_view:"),
    ]
    # The page asked for is resolved first (so a link to /runs?run=5 still opens it once the
    # password is given), but no page runs, and the menu stays hidden, until access is granted:
    # beyond loopback nothing shows without ABLATION_PASSWORD, and a set password is asked for
    # first (a password, not st.login: OpenID Connect needs an identity provider; see access.py).
    page = st.navigation(pages, position="top" if may_enter() else "hidden")
    require_access()
    page.run()
    # Last, so the browser has the whole page before it loads the chart code (a page that stops
    # early leaves this to the next one): preload.py
    warm_chart_code()
