"""The exit codes a training process (`python -m cnn_ablation execute RUN`) ends with, and the
worker reads: the one contract between a run's process and the worker that watches it."""

DISK_FULL = 28  # the process could not write for lack of space (ENOSPC)
PARENT_GONE = 70  # the process's worker died: it stops unowned
