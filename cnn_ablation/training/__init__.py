"""Training: one run in its own process: compile, fit with the recording callbacks (every epoch a
committed row, heartbeats, cancel, NaN guard), checkpoint and resume, the test pass.

May import: networks, data, `cnn_ablation.jobs.exit_codes` (its contract with the worker), storage,
keras. Nothing imports this package but the CLI's `execute`/`train` verbs and benchmarks.
"""
