"""Studies: a study as one object (`spec`), its grid of runs and adaptive rounds (`manage`), the
statistics (`analysis`) and the Markdown/LaTeX report (`report`).

May import: config, networks, data, jobs.launch (to queue runs), storage, pandas, scipy,
statsmodels. Never Keras, never Streamlit.
"""
