"""One log format for every process: time, process role and pid, run id, level, message.

Workers, training processes and the dashboard call `setup(role)` once at start; their log files
(under `$ABLATION_HOME/logs/`) are these lines. What the CLI prints for a person is output, not
logging, and stays `print`.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

FORMAT = "%(asctime)s %(role)s[%(process)d]%(run)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


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
    for name in ("cnn_ablation", "storage"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
