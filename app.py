"""The dashboard (placeholder until the pages land): shows runs from the database."""

import streamlit as st

from storage import get_engine, queries

st.set_page_config(page_title="cnn-ablation", layout="wide")
st.title("cnn-ablation")
frame = queries.runs_frame(get_engine())
if frame.empty:
    st.info("No runs yet: `python -m cnn_ablation train --dataset synthetic --epochs 2`.")
else:
    st.dataframe(frame[["id", "name", "label", "dataset", "status", "test_accuracy"]])
