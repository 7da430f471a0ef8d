"""The baseline of benchmarks/dashboard_browser.py: a Streamlit page with nothing of this project
on it, a heading, one 50 x 12 table with row selection (as the Runs page's) and a caption, so
a new browser session's time to its table is Streamlit's own start in the browser."""

import numpy as np
import pandas as pd
import streamlit as st

st.header("Runs")
frame = pd.DataFrame(np.random.default_rng(0).random((50, 12)),
                     columns=[f"column {i}" for i in range(12)])
st.dataframe(frame, hide_index=True, on_select="rerun", selection_mode="multi-row", key="table")
st.caption("Runs 1–50 of 10,000")
