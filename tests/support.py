"""Plain helpers the tests share (fixtures are in conftest.py)."""

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT = 1.0  # workers started by tests beat every second: liveness is exercised quickly
TEST_WORKER = "test-worker"  # the owner of the runs make_run starts (no process behind it)


def wait_for(predicate, timeout=120.0, what="condition"):
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie counts as gone)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
