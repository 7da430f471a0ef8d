"""One log format for every process: time, process role and pid, run id, level, message.

Workers, training processes and the dashboard call `setup(role)` once at start; their log files
(under `$ABLATION_HOME/logs/`) are these lines. What the CLI prints for a person is output, not
logging, and stays `print`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
from pathlib import Path
from typing import TextIO

FORMAT = "%(asctime)s %(role)s[%(process)d]%(run)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# A worker's log (its stdout and stderr, a file under $ABLATION_HOME/logs/) is started afresh past
# this size; the previous part is kept as `<name>.1` (one part: at most twice this on disk).
MAX_LOG_BYTES = 10 * 2**20


class _Context(logging.Filter):
    """Stamps every record with the process role and the run it is about."""

    def __init__(self, role: str, run_id: int | None):
        super().__init__()
        self.role, self.run = role, f" run={run_id}" if run_id is not None else ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.role, record.run = self.role, self.run
        return True


def setup(role: str, run_id: int | None = None, stream: TextIO | None = None,
          level: int = logging.INFO) -> None:
    """Send the project's loggers to `stream` (default stdout) in the one format."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    handler.addFilter(_Context(role, run_id))
    logger = logging.getLogger("cnn_ablation")  # storage's too: cnn_ablation.storage.*
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def rotate_own_log(folder: Path, limit: int = MAX_LOG_BYTES) -> Path | None:
    """When this process's stdout is a file under `folder` that has grown past `limit` bytes:
    keep it as `<name>.1` (replacing an older one), and point stdout and stderr (the file
    descriptors, so C libraries' and tracebacks' output follow) at a fresh file of the same
    name. Returns the kept part, or None when nothing was done (stdout a terminal, a pipe, a
    file elsewhere, or still small; on systems without /proc nothing is done either)."""
    try:
        info = os.fstat(1)
        if not stat.S_ISREG(info.st_mode) or info.st_size < limit:
            return None
        path = Path(os.readlink("/proc/self/fd/1"))
    except OSError:
        return None
    if Path(folder).resolve() not in path.parents:
        return None
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    kept = path.with_name(path.name + ".1")
    try:
        same = os.path.samestat(os.fstat(2), info)  # stderr goes to the same file
    except OSError:
        same = False
    try:
        os.replace(path, kept)
    except OSError:
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:  # no new file (disk full...): keep writing where we were, under its name
        with contextlib.suppress(OSError):
            os.replace(kept, path)
        return None
    os.dup2(fd, 1)
    if same:
        os.dup2(fd, 2)
    os.close(fd)
    logging.getLogger("cnn_ablation").info("log started afresh at %d MB; the earlier lines are "
                                           "in %s", limit // 2**20, kept)
    return kept
