"""Studies: a grid of switches x seeds, queued as runs, with the statistics of what each switch did.

- `spec`: a study as one object (factors, design, seeds, presets, the adaptive rule).
- `grid`: its runs: create, fill missing, re-run failed, cancel, delete, progress.
- `rounds`: adaptive seeds, a round at a time (`advance`, the worker's run-ended hook).
- `estimate`: how long it takes here.
- `results`: from runs to cell summaries, effects and verdicts; `estimators`, `effects`,
  `inference` (verdicts, Holm, power) underneath; `words` and `report` (Markdown, LaTeX, plots).

May import: config, networks, data, `jobs.launch` (to queue runs), storage, pandas, scipy,
statsmodels. Never Keras, never Streamlit. `report` and `words` never touch the database.
"""
