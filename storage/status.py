"""A run's status and the transitions allowed between statuses.

Every state change in `storage.lifecycle` moves a run only along an edge of `TRANSITIONS`, with the
source statuses in the statement's WHERE clause, so a writer that lost a race changes nothing.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"


class CancelMode(StrEnum):
    AFTER_EPOCH = "after_epoch"  # finish the epoch, keep it, then stop (the default)
    NOW = "now"  # stop at the next batch; the partial epoch is not stored


ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)

TRANSITIONS: dict[RunStatus, tuple[RunStatus, ...]] = {
    # a queued run fails without running when it cannot be started at all
    RunStatus.QUEUED: (RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED),
    # back to queued: its worker is stopping; it resumes from a checkpoint (lifecycle.requeue)
    RunStatus.RUNNING: (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED,
                        RunStatus.DIVERGED, RunStatus.QUEUED),
}


def sources_of(target: RunStatus) -> tuple[RunStatus, ...]:
    """The statuses a run may be in to move to `target`."""
    found = tuple(source for source, targets in TRANSITIONS.items() if target in targets)
    if not found:
        raise ValueError(f"no run may move to status {target!r}")
    return found
