"""Streamlit pages and Plotly figure builders. Nothing here imports TensorFlow."""
