"""Studies: a grid of switches x seeds, queued as runs, with the statistics of what each switch did.

- `spec`: a study as one object (`StudySpec`: factors, design, seeds, its cells and runs) and
  `StudyView`, a stored study; beneath it `factors` (factors and levels as typed, and as text),
  `chapter_network` and `own_network` (checking factors and building a cell's config for the
  chapter's network and for your own), `adaptive_rule` (the adaptive-seeds rule); `presets`: the
  ready-made studies.
- `grid`: its runs: create, fill missing, re-run failed, cancel, delete, progress.
- `rounds`: adaptive seeds, a round at a time (`advance`, the worker's run-ended hook).
- `estimate`: how long it takes here.
- `results`: from runs to cell summaries, effects and verdicts; `estimators` (cell values, t
  intervals, the curves per cell), `effects` (main, vs base, interactions), `inference`
  (verdicts, Holm, power) underneath; `words` (sentences, readable tables) and `report`
  (Markdown, LaTeX, the forest plot).

May import: config, networks, data, `jobs.launch` (to queue runs), storage, pandas, scipy,
statsmodels. Never Keras, never Streamlit. `report` and `words` never touch the database.
"""
