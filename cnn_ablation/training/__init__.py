"""Training: one run in its own process (`python -m cnn_ablation execute RUN`).

- `run`: set up, fit, test, finish (or requeue with a checkpoint); the heartbeat thread.
- `pipeline`: the validation split, each epoch's order from (seed, epoch), random ops reseeded.
- `recording`: the callbacks: every epoch a committed row, progress, cancel, NaN guard.
- `checkpoint`, `evaluation` (the test pass), `environment` (GPUs, what the run records).

May import: networks, data, `cnn_ablation.jobs.exit_codes` (its contract with the worker),
storage, keras. Nothing imports this package but the CLI's `execute`/`train` verbs and benchmarks.
"""
