"""Every state change of a run, each named after what it does.

Writes that other processes race for are single statements: a claim is one `UPDATE ... RETURNING`
(SQLite) or `SELECT ... FOR UPDATE SKIP LOCKED` then a conditional update (PostgreSQL); cancel and
finish are conditional on the current status (`storage.status.TRANSITIONS`), so the last writer
cannot undo another's transition.

A training process writes only while its run is still `running` under its worker: `beat`,
`report_progress` and `record_epoch` check that in the same statement and raise `RunLost`
otherwise (the run was reaped, cancelled and finished, or deleted), so a process whose run was
taken away stops writing at its next beat.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Engine,
    Update,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from cnn_ablation.storage.clock import db_now
from cnn_ablation.storage.engine import session_scope
from cnn_ablation.storage.listings import aggregate_updates
from cnn_ablation.storage.models import EpochMetricRow, LayerStatRow, RunRow, StepMetricRow
from cnn_ablation.storage.records import RUN_FIELDS, NewRun, Run, RunLost, RunNotFound, run_from
from cnn_ablation.storage.status import CancelMode, RunStatus, sources_of

METRIC_NAMES = ("loss", "accuracy", "val_loss", "val_accuracy")


def _changed(session: Session, stmt: Update) -> int:
    """Rows an UPDATE changed: 0 means its WHERE (the status it expected) no longer held."""
    return cast("CursorResult[Any]", session.execute(stmt)).rowcount


def _mine(run_id: int, worker_id: str) -> Any:
    return (RunRow.id == run_id) & (RunRow.status == RunStatus.RUNNING) & \
        (RunRow.worker_id == worker_id)


def _cancel_of(row: Any) -> CancelMode | None:
    if row is None:
        return None
    requested, mode = row
    return CancelMode(mode or CancelMode.NOW) if requested else None


def _backend_after(backend: str | None) -> Any:
    """The backend a claim stores: this worker's, but a run resumed from a checkpoint whose
    epochs so far trained on another keeps that one too ("tensorflow+jax"), so a study sees
    the mix rather than the last backend alone."""
    if backend is None:
        return RunRow.backend
    before = func.coalesce(RunRow.backend, "tensorflow")
    return case((RunRow.resume_epoch.is_(None), backend),
                (or_(before == backend, before.like("%+" + backend)), before),
                else_=before + "+" + backend)


def claim(engine: Engine, worker_id: str, host: str, device: str,
          heartbeat_interval: float, backend: str | None = None) -> Run | None:
    """Atomically move the oldest queued run to `running` for this worker (training on
    `device` with Keras' `backend`); None if none waits."""
    now = db_now()
    values = dict(status=RunStatus.RUNNING.value, worker_id=worker_id, host=host, device=device,
                  backend=_backend_after(backend), started_at=now, heartbeat_at=now,
                  progress_at=now, phase="starting",
                  heartbeat_interval=heartbeat_interval, pid=None)
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


def start_foreground(engine: Engine, new: NewRun, worker_id: str, host: str, device: str,
                     heartbeat_interval: float, backend: str | None = None) -> int:
    """Create a run that is already `running` in this process (`python -m cnn_ablation train`)."""
    now = db_now()
    with session_scope(engine) as session:
        row = RunRow(**asdict(new), status=RunStatus.RUNNING.value, created_at=now,
                     started_at=now, cancel_requested=False, worker_id=worker_id, host=host,
                     device=device, backend=backend, heartbeat_at=now, progress_at=now, phase="starting",
                     heartbeat_interval=heartbeat_interval)
        session.add(row)
        session.flush()
        return row.id


def attach_process(engine: Engine, run_id: int, worker_id: str, pid: int,
                   log_path: str | None = None,
                   environment: dict[str, Any] | None = None) -> None:
    """Record the process that trains a running run (where its log goes; from the process
    itself, its library versions and device)."""
    values: dict[str, Any] = {"pid": pid}
    if log_path is not None:
        values["log_path"] = log_path
    if environment is not None:
        values["environment_json"] = json.dumps(environment, sort_keys=True)
    with session_scope(engine) as session:
        session.execute(update(RunRow).where(_mine(run_id, worker_id)).values(**values))


def beat(engine: Engine, run_id: int, worker_id: str) -> CancelMode | None:
    """Refresh a running run's heartbeat (its owner is alive); returns the cancel requested, if
    any. Raises RunLost when the run is no longer running under `worker_id`."""
    stmt = update(RunRow).where(_mine(run_id, worker_id)).values(heartbeat_at=db_now())
    with session_scope(engine) as session:
        row = session.execute(stmt.returning(RunRow.cancel_requested, RunRow.cancel_mode)).first()
    if row is None:
        raise RunLost(run_id)
    return _cancel_of(row)


def report_progress(engine: Engine, run_id: int, worker_id: str, phase: str, epoch: int | None,
                    batch: int | None, batches: int | None) -> CancelMode | None:
    """Progress from inside the training loop (what the worker's hang check reads), with a
    heartbeat, in one statement; returns the cancel requested, if any. Raises RunLost."""
    now = db_now()
    stmt = update(RunRow).where(_mine(run_id, worker_id)).values(
        phase=phase, progress_epoch=epoch, progress_batch=batch, progress_batches=batches,
        progress_at=now, heartbeat_at=now)
    with session_scope(engine) as session:
        row = session.execute(stmt.returning(RunRow.cancel_requested, RunRow.cancel_mode)).first()
    if row is None:
        raise RunLost(run_id)
    return _cancel_of(row)


def record_epoch(engine: Engine, run_id: int, worker_id: str, epoch: int,
                 metrics: dict[str, float | None], seconds: float,
                 layer_stats: list[dict[str, Any]] | None = None) -> CancelMode | None:
    """Commit one whole epoch (and its per-layer norms) at once, so a crash keeps it; only while
    the run is still ours (RunLost otherwise). Returns the cancel requested, if any."""
    now = db_now()
    claim_row = update(RunRow).where(_mine(run_id, worker_id)).values(
        heartbeat_at=now, progress_at=now, **_aggregates_after(epoch, metrics),
    ).returning(RunRow.cancel_requested, RunRow.cancel_mode)
    with session_scope(engine) as session:
        row = session.execute(claim_row).first()
        if row is None:
            raise RunLost(run_id)
        session.execute(insert(EpochMetricRow).values(
            run_id=run_id, epoch=epoch, seconds=seconds, recorded_at=now,
            **{k: metrics.get(k) for k in METRIC_NAMES},
        ))
        if layer_stats:
            session.execute(insert(LayerStatRow), [
                dict(run_id=run_id, epoch=epoch, **stat) for stat in layer_stats
            ])
    return _cancel_of(row)


def _aggregates_after(epoch: int, metrics: dict[str, float | None]) -> dict[str, Any]:
    """The run's epoch aggregates (RunRow.epochs_done and the rest) once this epoch is stored:
    SET expressions read the row as it was, and the epoch's INSERT in the same transaction
    fails on an epoch stored before, so they count each epoch once. A NULL validation accuracy
    leaves the best as it was, as max() over the epochs does."""
    val = metrics.get("val_accuracy")
    newest = epoch >= func.coalesce(RunRow.last_epoch, 0)
    values: dict[str, Any] = {"epochs_done": RunRow.epochs_done + 1,
                              "last_epoch": case((newest, epoch), else_=RunRow.last_epoch)}
    if val is not None:
        values["best_val_accuracy"] = case(
            (or_(RunRow.best_val_accuracy.is_(None), RunRow.best_val_accuracy < val), val),
            else_=RunRow.best_val_accuracy)
    for column, name in (("final_val_accuracy", "val_accuracy"), ("final_accuracy", "accuracy"),
                         ("final_val_loss", "val_loss")):
        values[column] = case((newest, metrics.get(name)), else_=getattr(RunRow, column))
    return values


def finish(engine: Engine, run_id: int, status: RunStatus | str, *,
           worker_id: str | None = None, error: str | None = None,
           traceback: str | None = None, test_loss: float | None = None,
           test_accuracy: float | None = None, test_report_json: str | None = None,
           progress_epoch: int | None = None, progress_batch: int | None = None) -> bool:
    """Move a run to a final `status` if the transition is allowed from where it is now (and,
    given `worker_id`, only if that worker still owns it); False if not: someone else finished
    or took it first."""
    status = RunStatus(status)
    values: dict[str, Any] = dict(status=status.value, finished_at=db_now(), error=error,
                                  traceback=traceback, test_loss=test_loss,
                                  test_accuracy=test_accuracy, test_report_json=test_report_json,
                                  checkpoint_path=None, phase=None)
    if progress_epoch is not None:
        values.update(progress_epoch=progress_epoch, progress_batch=progress_batch)
    stmt = update(RunRow).where(RunRow.id == run_id, RunRow.status.in_(sources_of(status)))
    if worker_id is not None:
        stmt = stmt.where(RunRow.worker_id == worker_id)
    with session_scope(engine) as session:
        if _changed(session, stmt.values(**values)) != 1:
            return False
        for statement in aggregate_updates(run_id):  # right even if an older process wrote
            session.execute(statement)               # its epochs (before migration 0007)
        return True


def requeue(engine: Engine, run_id: int, worker_id: str, checkpoint_path: str | None,
            resume_epoch: int, note: str) -> bool:
    """A running run goes back to the queue with a checkpoint after `resume_epoch` epochs (its
    worker is stopping); the next worker resumes it. False if the run was no longer ours.

    A cancel asked for meanwhile wins, in the same statement: the run ends `cancelled` (its
    finished epochs kept) instead of waiting in the queue forever, which no worker claims and
    no Cancel button touches (both skip a queued run with `cancel_requested`)."""
    cancelled = RunRow.cancel_requested.is_(True)
    stmt = update(RunRow).where(_mine(run_id, worker_id)).values(
        status=case((cancelled, RunStatus.CANCELLED.value), else_=RunStatus.QUEUED.value),
        finished_at=case((cancelled, db_now()), else_=None),
        error=case((cancelled, "cancelled while it went back to the queue (its finished "
                               "epochs are kept)"), else_=RunRow.error),
        worker_id=None, pid=None, host=None, device=None,
        heartbeat_at=None, progress_at=None, phase=None,
        checkpoint_path=case((cancelled, None), else_=checkpoint_path),
        resume_epoch=resume_epoch, notes=_appended(note))
    with session_scope(engine) as session:
        return _changed(session, stmt) == 1


def add_note(engine: Engine, run_id: int, note: str) -> None:
    """Append one line to the run's lifecycle notes (shown with the run)."""
    with session_scope(engine) as session:
        session.execute(update(RunRow).where(RunRow.id == run_id).values(notes=_appended(note)))


def _appended(note: str) -> Any:
    from sqlalchemy import func

    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return func.coalesce(RunRow.notes + "\n", "") + f"{stamp} {note}"


def request_cancel(engine: Engine, run_id: int, now: bool = False) -> RunStatus:
    """Cancel a run: a queued one becomes `cancelled` at once (never starts); a running one is
    asked to stop after its current epoch (default: that epoch is kept) or, with `now`, at once
    (the partial epoch is not stored). Returns the status after the call. Each branch is one
    conditional statement, so a cancel racing a claim never overwrites the claim."""
    queued = update(RunRow).where(RunRow.id == run_id, RunRow.status == RunStatus.QUEUED).values(
        status=RunStatus.CANCELLED.value, finished_at=db_now(), cancel_requested=True,
        cancel_mode=CancelMode.NOW.value, checkpoint_path=None,
        error="cancelled before it started")
    mode = CancelMode.NOW if now else CancelMode.AFTER_EPOCH
    running = update(RunRow).where(RunRow.id == run_id, RunRow.status == RunStatus.RUNNING).values(
        cancel_requested=True, cancel_mode=mode.value)
    with session_scope(engine) as session:
        if _changed(session, queued):
            return RunStatus.CANCELLED
        if _changed(session, running):
            return RunStatus.RUNNING
        status = session.scalar(select(RunRow.status).where(RunRow.id == run_id))
    if status is None:
        raise RunNotFound(run_id)
    return RunStatus(status)


def record_steps(engine: Engine, run_id: int, worker_id: str,
                 rows: Sequence[tuple[int, int, float | None, float | None]]) -> None:
    """Store sampled training steps, rows of (epoch, global step, loss, accuracy or None), in one
    INSERT, only while the run is still ours (RunLost otherwise). A step stored before (a run
    that trains an epoch again) is replaced: the newest sample wins."""
    if not rows:
        return
    now = db_now()
    values = [dict(run_id=run_id, epoch=int(epoch), step=int(step), loss=_finite(loss),
                   accuracy=_finite(accuracy), recorded_at=now)
              for epoch, step, loss, accuracy in rows]
    with session_scope(engine) as session:
        mine = session.scalar(select(RunRow.id).where(_mine(run_id, worker_id)))
        if mine is None:
            raise RunLost(run_id)
        fresh = list({v["step"]: v for v in values}.values())
        session.execute(delete(StepMetricRow).where(
            StepMetricRow.run_id == run_id, StepMetricRow.step.in_([v["step"] for v in fresh])))
        session.execute(insert(StepMetricRow).values(fresh))
        _thin_steps(session, run_id)


MAX_STEP_ROWS = 2000  # sampled steps kept per run: a run-hour samples ~3,600


def _thin_steps(session: Session, run_id: int) -> None:
    """Past MAX_STEP_ROWS samples, drop every other one (the newest kept): a long run's curve
    keeps its shape at half the resolution, and no run grows its table or its reads without
    bound. Halving each time makes the cost of thinning a constant per sample."""
    count = session.scalar(select(func.count()).select_from(StepMetricRow).where(
        StepMetricRow.run_id == run_id)) or 0
    if count <= MAX_STEP_ROWS:
        return
    steps = list(session.scalars(select(StepMetricRow.step).where(
        StepMetricRow.run_id == run_id).order_by(StepMetricRow.step.desc())))
    dropped = steps[1::2]  # every other one, counted from the newest
    for start in range(0, len(dropped), 500):  # bound the IN list
        session.execute(delete(StepMetricRow).where(
            StepMetricRow.run_id == run_id, StepMetricRow.step.in_(dropped[start:start + 500])))


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def record_placement(engine: Engine, run_id: int, worker_id: str, host: str, device: str) -> bool:
    """Where a running run's training process landed (an executor that places runs itself, such
    as Ray, knows the node and GPU only once its task starts): its host and device, in one
    conditional UPDATE, only while the run is still running under `worker_id`. False if it no
    longer is (reaped, cancelled, finished or deleted); nothing is written then."""
    stmt = update(RunRow).where(_mine(run_id, worker_id)).values(host=host[:200],
                                                                 device=device[:100])
    with session_scope(engine) as session:
        return _changed(session, stmt) == 1
