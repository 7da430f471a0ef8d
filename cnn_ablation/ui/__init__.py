"""The dashboard's pages (New run, Runs and one run's view, Compare, Studies; access and preload),
rendered top to bottom with their session-state bookkeeping in small named helpers, and Plotly
figures as pure functions of frames.

May import: storage, config, networks (the registry, never Keras), data (facts, never loading),
jobs (launch; the local worker as a process), studies, streamlit, plotly. Never TensorFlow or
Keras, and never trains: runs train in worker processes.
"""
