"""Every state change of a run, each named after what it does.

Writes that other processes race for are single statements: a claim is one `UPDATE ... RETURNING`
(SQLite) or `SELECT ... FOR UPDATE SKIP LOCKED` then a conditional update (PostgreSQL); cancel and
finish are conditional on the current status (`storage.status.TRANSITIONS`), so the last writer
cannot undo another's transition.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Update, insert, select, update
from sqlalchemy.orm import Session

from storage.engine import session_scope
from storage.models import EpochMetricRow, LayerStatRow, RunRow
from storage.records import RUN_FIELDS, NewRun, Run, RunNotFound, run_from
from storage.status import RunStatus, sources_of

METRIC_NAMES = ("loss", "accuracy", "val_loss", "val_accuracy")


def _changed(session: Session, stmt: Update) -> int:
    """Rows an UPDATE changed: 0 means its WHERE (the status it expected) no longer held."""
    return cast("CursorResult[Any]", session.execute(stmt)).rowcount


def claim(engine: Engine, worker_id: str, host: str, device: str,
          heartbeat_interval: float) -> Run | None:
    """Atomically move the oldest queued run to `running` for this worker; None if none waits."""
    now = time.time()
    values = dict(status=RunStatus.RUNNING.value, worker_id=worker_id, host=host, device=device,
                  started_at=now, heartbeat_at=now, heartbeat_interval=heartbeat_interval)
    oldest = select(RunRow.id).where(RunRow.status == RunStatus.QUEUED,
                                     RunRow.cancel_requested.is_(False))
    oldest = oldest.order_by(RunRow.id).limit(1)
    with session_scope(engine) as session:
        if engine.dialect.name == "postgresql":
            run_id = session.scalar(oldest.with_for_update(skip_locked=True))
            if run_id is None:
                return None
            target = RunRow.id == run_id
        else:
            target = RunRow.id == oldest.scalar_subquery()
        stmt = update(RunRow).where(target, RunRow.status == RunStatus.QUEUED).values(**values)
        row = session.execute(stmt.returning(*[getattr(RunRow, n) for n in RUN_FIELDS])).first()
        return run_from(row._mapping) if row else None


def start_foreground(engine: Engine, new: NewRun, host: str, device: str,
                     heartbeat_interval: float) -> int:
    """Create a run that is already `running` in this process (`python -m cnn_ablation train`)."""
    now = time.time()
    with session_scope(engine) as session:
        row = RunRow(**asdict(new), status=RunStatus.RUNNING.value, created_at=now,
                     started_at=now, cancel_requested=False, worker_id="foreground", host=host,
                     device=device, heartbeat_at=now, heartbeat_interval=heartbeat_interval)
        session.add(row)
        session.flush()
        return row.id


def attach_process(engine: Engine, run_id: int, pid: int,
                   heartbeat_interval: float | None = None) -> None:
    """Record the process that trains a running run (and, from that process, its first beat)."""
    values: dict[str, Any] = {"pid": pid}
    if heartbeat_interval is not None:
        values.update(heartbeat_at=time.time(), heartbeat_interval=heartbeat_interval)
    with session_scope(engine) as session:
        session.execute(update(RunRow).where(RunRow.id == run_id,
                                             RunRow.status == RunStatus.RUNNING).values(**values))


def report_progress(engine: Engine, run_id: int, epoch: int | None, batch: int | None,
                    batches: int | None) -> bool:
    """Progress + heartbeat in one statement; returns whether a cancel was requested."""
    stmt = (
        update(RunRow)
        .where(RunRow.id == run_id)
        .values(progress_epoch=epoch, progress_batch=batch, progress_batches=batches,
                heartbeat_at=time.time())
        .returning(RunRow.cancel_requested)
    )
    with session_scope(engine) as session:
        flag = session.execute(stmt).scalar()
    return bool(flag)


def beat(engine: Engine, run_id: int) -> bool:
    """Refresh a running run's heartbeat; returns whether a cancel was requested."""
    stmt = update(RunRow).where(RunRow.id == run_id, RunRow.status == RunStatus.RUNNING)
    stmt = stmt.values(heartbeat_at=time.time()).returning(RunRow.cancel_requested)
    with session_scope(engine) as session:
        return bool(session.execute(stmt).scalar())


def record_epoch(engine: Engine, run_id: int, epoch: int, metrics: dict[str, float | None],
                 seconds: float, layer_stats: list[dict[str, Any]] | None = None) -> None:
    """Commit one finished epoch (and its per-layer norms) at once, so a crash keeps it."""
    now = time.time()
    with session_scope(engine) as session:
        session.execute(insert(EpochMetricRow).values(
            run_id=run_id, epoch=epoch, seconds=seconds, recorded_at=now,
            **{k: metrics.get(k) for k in METRIC_NAMES},
        ))
        if layer_stats:
            session.execute(insert(LayerStatRow), [
                dict(run_id=run_id, epoch=epoch, **stat) for stat in layer_stats
            ])
        session.execute(update(RunRow).where(RunRow.id == run_id).values(heartbeat_at=now))


def finish(engine: Engine, run_id: int, status: RunStatus | str, *, error: str | None = None,
           traceback: str | None = None, test_loss: float | None = None,
           test_accuracy: float | None = None, test_report_json: str | None = None,
           progress_epoch: int | None = None, progress_batch: int | None = None) -> bool:
    """Move a run to a final `status` if the transition is allowed from where it is now;
    False if it is not (someone else finished it first)."""
    status = RunStatus(status)
    values: dict[str, Any] = dict(status=status.value, finished_at=time.time(), error=error,
                                  traceback=traceback, test_loss=test_loss,
                                  test_accuracy=test_accuracy, test_report_json=test_report_json)
    if progress_epoch is not None:
        values.update(progress_epoch=progress_epoch, progress_batch=progress_batch)
    stmt = update(RunRow).where(RunRow.id == run_id, RunRow.status.in_(sources_of(status)))
    with session_scope(engine) as session:
        return _changed(session, stmt.values(**values)) == 1


def request_cancel(engine: Engine, run_id: int) -> RunStatus:
    """Cancel a run: a queued one becomes `cancelled` now (never starts); a running one is flagged
    and stops within one progress interval. Returns the status after the call. Each branch is one
    conditional statement, so a cancel racing a claim never overwrites the claim."""
    queued = update(RunRow).where(RunRow.id == run_id, RunRow.status == RunStatus.QUEUED).values(
        status=RunStatus.CANCELLED.value, finished_at=time.time(), cancel_requested=True,
        error="cancelled before it started")
    running = update(RunRow).where(RunRow.id == run_id, RunRow.status == RunStatus.RUNNING).values(
        cancel_requested=True)
    with session_scope(engine) as session:
        if _changed(session, queued):
            return RunStatus.CANCELLED
        if _changed(session, running):
            return RunStatus.RUNNING
        status = session.scalar(select(RunRow.status).where(RunRow.id == run_id))
    if status is None:
        raise RunNotFound(run_id)
    return RunStatus(status)


def reap_stale(engine: Engine, now: float | None = None) -> list[int]:
    """Fail `running` runs whose heartbeat is older than twice their interval ("worker lost")."""
    now = now or time.time()
    reaped = []
    with session_scope(engine) as session:
        running = session.execute(
            select(RunRow.id, RunRow.heartbeat_at, RunRow.heartbeat_interval).where(
                RunRow.status == RunStatus.RUNNING)
        ).all()
        for run_id, beat_at, interval in running:
            if beat_at is None or interval is None or now - beat_at <= 2 * interval:
                continue
            stmt = update(RunRow).where(RunRow.id == run_id, RunRow.status == RunStatus.RUNNING,
                                        RunRow.heartbeat_at == beat_at)
            stmt = stmt.values(status=RunStatus.FAILED.value, finished_at=now,
                               error=f"worker lost: no heartbeat for {now - beat_at:.0f} s "
                                     f"(interval {interval:g} s); finished epochs are kept")
            if _changed(session, stmt):
                reaped.append(run_id)
    return reaped
