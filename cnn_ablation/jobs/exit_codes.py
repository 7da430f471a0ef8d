"""The exit codes a training process (`python -m cnn_ablation execute RUN`) ends with, and the
worker reads: the one contract between a run's process and the worker that watches it. Also the
other half of it: SIGTERM from the worker means "stop after this epoch and go back to the
queue", from the process's first line on (`catch_sigterm_while_starting`)."""

import signal
import threading

DISK_FULL = 28  # the process could not write for lack of space (ENOSPC)
PARENT_GONE = 70  # the process's worker died: it stops unowned
CANNOT_WRITE = 73  # the database refused this process's writes (read-only for it)

# Set when SIGTERM arrived before the training loop installed its own handler (TensorFlow takes
# seconds to import): the run then goes back to the queue instead of being killed as it starts.
SIGTERM_WHILE_STARTING = threading.Event()


def catch_sigterm_while_starting() -> None:
    """Called first thing in a training process: remember a SIGTERM instead of dying of it."""
    signal.signal(signal.SIGTERM, lambda *_: SIGTERM_WHILE_STARTING.set())
