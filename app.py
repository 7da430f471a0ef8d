"""cnn-ablation dashboard: `streamlit run app.py`. Never imports TensorFlow; training happens in
background worker processes (one is started here when none is alive; ABLATION_START_WORKER=0
turns that off)."""

import streamlit as st

st.set_page_config(page_title="cnn-ablation", page_icon=":material/science:", layout="wide")

pages = [
    st.Page("cnn_ablation/ui/new_run.py", title="New run", icon=":material/science:", default=True),
    st.Page("cnn_ablation/ui/runs.py", title="Runs", icon=":material/monitoring:"),
    st.Page("cnn_ablation/ui/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("cnn_ablation/ui/studies.py", title="Studies", icon=":material/grid_view:"),
]
st.navigation(pages).run()
