"""Every read and write of the database. Results leave as dataclasses or DataFrames, never ORM rows.

Writes that other processes race for are single statements: a claim is one `UPDATE ... RETURNING`
(SQLite) or `SELECT ... FOR UPDATE SKIP LOCKED` (PostgreSQL); cancel and finish are conditional
updates on the current status, so the last writer cannot undo another's transition.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, delete, func, insert, or_, select, update

from storage.engine import session_scope
from storage.models import (
    EpochMetricRow,
    LayerStatRow,
    RunRow,
    StudyRow,
    WorkerRow,
)

ACTIVE_STATUSES = ("queued", "running")


class RunNotFound(LookupError):
    def __init__(self, run_id: int):
        super().__init__(f"run {run_id} does not exist")
        self.run_id = run_id


@dataclass(frozen=True)
class NewRun:
    """What a queued run needs: filled by `cnn_ablation.launch` from a validated RunConfig."""

    config_json: str
    config_hash: str
    variant_hash: str
    label: str
    dataset: str
    preset: str
    seed: int
    epochs: int
    params: int | None
    name: str = ""
    study_id: int | None = None
    retry_of: int | None = None


@dataclass(frozen=True, kw_only=True)
class Run(NewRun):
    """A run as stored: what was queued plus its lifecycle, progress and results."""

    id: int
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    worker_id: str | None
    host: str | None
    pid: int | None
    device: str | None
    heartbeat_at: float | None
    heartbeat_interval: float | None
    cancel_requested: bool
    error: str | None
    traceback: str | None
    progress_epoch: int | None
    progress_batch: int | None
    progress_batches: int | None
    test_loss: float | None
    test_accuracy: float | None
    test_report_json: str | None

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json)

    @property
    def test_report(self) -> dict[str, Any] | None:
        return json.loads(self.test_report_json) if self.test_report_json else None


RUN_FIELDS = [f.name for f in fields(Run)]
EPOCH_COLUMNS = ["run_id", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]


def _run(row: RunRow) -> Run:
    return Run(**{name: getattr(row, name) for name in RUN_FIELDS})


def _run_from_mapping(mapping) -> Run:
    return Run(**{name: mapping[name] for name in RUN_FIELDS})


# --- runs: create, find ---------------------------------------------------------------------------
def create_runs(engine: Engine, new_runs: list[NewRun], status: str = "queued") -> list[int]:
    """Insert runs in one transaction (all or nothing); returns their ids in order."""
    now = time.time()
    ids = []
    with session_scope(engine) as session:
        for new in new_runs:
            row = RunRow(**new.__dict__, status=status, created_at=now, cancel_requested=False,
                         started_at=now if status == "running" else None)
            session.add(row)
            session.flush()
            ids.append(row.id)
    return ids


def find_run(engine: Engine, run_id: int) -> Run | None:
    with session_scope(engine, write=False) as session:
        row = session.get(RunRow, run_id)
        return _run(row) if row else None


def find_run_or_raise(engine: Engine, run_id: int) -> Run:
    run = find_run(engine, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def list_runs(
    engine: Engine,
    statuses: list[str] | None = None,
    datasets: list[str] | None = None,
    study_id: int | None = None,
    ids: list[int] | None = None,
    config_hashes: list[str] | None = None,
) -> list[Run]:
    query = select(RunRow).order_by(RunRow.id)
    if config_hashes is not None:
        query = query.where(RunRow.config_hash.in_(config_hashes))
    if statuses:
        query = query.where(RunRow.status.in_(statuses))
    if datasets:
        query = query.where(RunRow.dataset.in_(datasets))
    if study_id is not None:
        query = query.where(RunRow.study_id == study_id)
    if ids is not None:
        query = query.where(RunRow.id.in_(ids))
    with session_scope(engine, write=False) as session:
        return [_run(row) for row in session.scalars(query)]


def finished_run_times(engine: Engine, preset: str, dataset: str, host: str | None = None):
    """(seconds, config JSON) of completed runs of one preset and dataset (on `host` if given)."""
    query = select(RunRow.started_at, RunRow.finished_at, RunRow.config_json).where(
        RunRow.status == "completed", RunRow.preset == preset, RunRow.dataset == dataset)
    if host:
        query = query.where(RunRow.host == host)
    with session_scope(engine, write=False) as session:
        return [(end - start, config) for start, end, config in session.execute(query)
                if start and end]


def completed_runs_by_hash(engine: Engine, config_hashes: list[str]) -> dict[str, list[int]]:
    """config_hash -> ids of completed runs with exactly that config (seed included)."""
    query = select(RunRow.config_hash, RunRow.id).where(
        RunRow.config_hash.in_(config_hashes), RunRow.status == "completed"
    )
    found: dict[str, list[int]] = {}
    with session_scope(engine, write=False) as session:
        for config_hash, run_id in session.execute(query):
            found.setdefault(config_hash, []).append(run_id)
    return found


def runs_frame(engine: Engine, **filters) -> pd.DataFrame:
    """One row per run with its epoch aggregates: epochs_done, best/final val accuracy."""
    runs = list_runs(engine, **filters)
    frame = pd.DataFrame([r.__dict__ for r in runs], columns=RUN_FIELDS)
    agg = select(
        EpochMetricRow.run_id,
        func.count(EpochMetricRow.id).label("epochs_done"),
        func.max(EpochMetricRow.val_accuracy).label("best_val_accuracy"),
        func.max(EpochMetricRow.epoch).label("last_epoch"),
    ).where(EpochMetricRow.run_id.in_(frame["id"].tolist())).group_by(EpochMetricRow.run_id)

    with session_scope(engine, write=False) as session:
        aggs = pd.DataFrame(session.execute(agg).mappings().all(),
                            columns=["run_id", "epochs_done", "best_val_accuracy", "last_epoch"])
        last = _last_epoch_values(session, frame["id"].tolist())
    frame = frame.merge(aggs, how="left", left_on="id", right_on="run_id").drop(columns="run_id")
    frame = frame.merge(last, how="left", left_on="id", right_on="run_id").drop(columns="run_id")
    frame["epochs_done"] = frame["epochs_done"].fillna(0).astype(int)
    return frame


def _last_epoch_values(session, run_ids: list[int]) -> pd.DataFrame:
    latest = (
        select(EpochMetricRow.run_id, func.max(EpochMetricRow.epoch).label("epoch"))
        .group_by(EpochMetricRow.run_id)
        .subquery()
    )
    query = select(
        EpochMetricRow.run_id,
        EpochMetricRow.val_accuracy.label("final_val_accuracy"),
        EpochMetricRow.accuracy.label("final_accuracy"),
        EpochMetricRow.val_loss.label("final_val_loss"),
    ).join(latest, and_(EpochMetricRow.run_id == latest.c.run_id,
                        EpochMetricRow.epoch == latest.c.epoch)
           ).where(EpochMetricRow.run_id.in_(run_ids))
    return pd.DataFrame(session.execute(query).mappings().all(),
                        columns=["run_id", "final_val_accuracy", "final_accuracy", "final_val_loss"])


def epochs_frame(
    engine: Engine, run_ids: list[int], after: dict[int, int] | None = None
) -> pd.DataFrame:
    """Epoch rows of `run_ids`; with `after`, only epochs newer than `after[run_id]`."""
    query = select(*[getattr(EpochMetricRow, c) for c in EPOCH_COLUMNS]).where(
        EpochMetricRow.run_id.in_(run_ids)
    )
    if after:
        query = query.where(or_(*[
            and_(EpochMetricRow.run_id == rid, EpochMetricRow.epoch > after.get(rid, 0))
            for rid in run_ids
        ]))
    query = query.order_by(EpochMetricRow.run_id, EpochMetricRow.epoch)
    with session_scope(engine, write=False) as session:
        rows = session.execute(query).mappings().all()
    return pd.DataFrame(rows, columns=EPOCH_COLUMNS)


def layer_stats_frame(engine: Engine, run_ids: list[int]) -> pd.DataFrame:
    cols = ["run_id", "epoch", "layer", "grad_norm", "weight_norm"]
    query = select(*[getattr(LayerStatRow, c) for c in cols]).where(
        LayerStatRow.run_id.in_(run_ids)).order_by(LayerStatRow.run_id, LayerStatRow.epoch)
    with session_scope(engine, write=False) as session:
        return pd.DataFrame(session.execute(query).mappings().all(), columns=cols)


# --- runs: lifecycle ------------------------------------------------------------------------------
def claim_next_run(
    engine: Engine, worker_id: str, host: str, device: str, heartbeat_interval: float
) -> Run | None:
    """Atomically move the oldest queued run to `running` for this worker; None if queue empty."""
    now = time.time()
    values = dict(status="running", worker_id=worker_id, host=host, device=device,
                  started_at=now, heartbeat_at=now, heartbeat_interval=heartbeat_interval)
    oldest = select(RunRow.id).where(RunRow.status == "queued", RunRow.cancel_requested.is_(False))
    oldest = oldest.order_by(RunRow.id).limit(1)
    with session_scope(engine) as session:
        if engine.dialect.name == "postgresql":
            run_id = session.scalar(oldest.with_for_update(skip_locked=True))
            if run_id is None:
                return None
            target = RunRow.id == run_id
        else:
            target = RunRow.id == oldest.scalar_subquery()
        stmt = update(RunRow).where(target, RunRow.status == "queued").values(**values)
        row = session.execute(stmt.returning(*[getattr(RunRow, n) for n in RUN_FIELDS])).first()
        return _run_from_mapping(row._mapping) if row else None


def mark_running(engine: Engine, run_id: int, **values: Any) -> None:
    """Set host/pid/device etc. on a run (a foreground `train` or a child that just started)."""
    with session_scope(engine) as session:
        session.execute(update(RunRow).where(RunRow.id == run_id).values(**values))


def report_progress(
    engine: Engine, run_id: int, epoch: int | None, batch: int | None, batches: int | None
) -> bool:
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


def heartbeat_run(engine: Engine, run_id: int) -> bool:
    stmt = update(RunRow).where(RunRow.id == run_id, RunRow.status == "running")
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
            **{k: metrics.get(k) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
        ))
        if layer_stats:
            session.execute(insert(LayerStatRow), [
                dict(run_id=run_id, epoch=epoch, **stat) for stat in layer_stats
            ])
        session.execute(update(RunRow).where(RunRow.id == run_id).values(heartbeat_at=now))


def finish_run(engine: Engine, run_id: int, status: str, **values: Any) -> bool:
    """Move a run that is still active to a final status; False if someone else finished it."""
    stmt = update(RunRow).where(RunRow.id == run_id, RunRow.status.in_(ACTIVE_STATUSES))
    stmt = stmt.values(status=status, finished_at=time.time(), **values)
    with session_scope(engine) as session:
        return session.execute(stmt).rowcount == 1


def request_cancel(engine: Engine, run_id: int) -> str:
    """Cancel a run: a queued one becomes `cancelled` now (never starts); a running one is flagged
    and stops within one progress interval. Returns the status after the call."""
    now = time.time()
    with session_scope(engine) as session:
        row = session.get(RunRow, run_id)
        if row is None:
            raise RunNotFound(run_id)
        if row.status == "queued":
            row.status, row.finished_at, row.cancel_requested = "cancelled", now, True
            row.error = "cancelled before it started"
        elif row.status == "running":
            row.cancel_requested = True
        return row.status


def reap_stale_runs(engine: Engine, now: float | None = None) -> list[int]:
    """Fail `running` runs whose heartbeat is older than twice their interval ("worker lost")."""
    now = now or time.time()
    reaped = []
    with session_scope(engine) as session:
        running = session.execute(
            select(RunRow.id, RunRow.heartbeat_at, RunRow.heartbeat_interval).where(
                RunRow.status == "running")
        ).all()
        for run_id, beat, interval in running:
            if beat is None or interval is None or now - beat <= 2 * interval:
                continue
            stmt = update(RunRow).where(RunRow.id == run_id, RunRow.status == "running",
                                        RunRow.heartbeat_at == beat)
            stmt = stmt.values(status="failed", finished_at=now,
                               error=f"worker lost: no heartbeat for {now - beat:.0f} s "
                                     f"(interval {interval:g} s); finished epochs are kept")
            if session.execute(stmt).rowcount:
                reaped.append(run_id)
    return reaped


def delete_run(engine: Engine, run_id: int) -> None:
    """Delete a run and its epochs; a running run must be cancelled first."""
    with session_scope(engine) as session:
        row = session.get(RunRow, run_id)
        if row is None:
            raise RunNotFound(run_id)
        if row.status == "running":
            raise ValueError(f"run {run_id} is running; cancel it before deleting it")
        session.execute(delete(EpochMetricRow).where(EpochMetricRow.run_id == run_id))
        session.execute(delete(LayerStatRow).where(LayerStatRow.run_id == run_id))
        session.delete(row)


# --- workers --------------------------------------------------------------------------------------
def register_worker(engine: Engine, worker_id: str, host: str, pid: int | None, slots: str) -> None:
    now = time.time()
    with session_scope(engine) as session:
        row = session.get(WorkerRow, worker_id)
        if row is None:
            session.add(WorkerRow(id=worker_id, host=host, pid=pid, slots=slots, started_at=now,
                                  heartbeat_at=now))
        else:
            row.pid, row.slots, row.heartbeat_at, row.stopped_at = pid, slots, now, None


def claim_worker_start(engine: Engine, worker_id: str, host: str, max_age: float) -> bool:
    """In one write transaction: if no worker beat within `max_age` s, register `worker_id` as
    starting and return True. Callers racing here start exactly one worker between them."""
    now = time.time()
    with session_scope(engine) as session:
        alive = session.scalar(select(func.count(WorkerRow.id)).where(
            WorkerRow.stopped_at.is_(None), WorkerRow.heartbeat_at > now - max_age))
        if alive:
            return False
        session.add(WorkerRow(id=worker_id, host=host, pid=None, slots="starting",
                              started_at=now, heartbeat_at=now))
        return True


def heartbeat_worker(engine: Engine, worker_id: str) -> None:
    with session_scope(engine) as session:
        session.execute(update(WorkerRow).where(WorkerRow.id == worker_id)
                        .values(heartbeat_at=time.time()))


def stop_worker(engine: Engine, worker_id: str) -> None:
    with session_scope(engine) as session:
        session.execute(update(WorkerRow).where(WorkerRow.id == worker_id)
                        .values(stopped_at=time.time()))


def live_workers(engine: Engine, max_age: float) -> pd.DataFrame:
    cols = ["id", "host", "pid", "slots", "started_at", "heartbeat_at"]
    query = select(*[getattr(WorkerRow, c) for c in cols]).where(
        WorkerRow.stopped_at.is_(None), WorkerRow.heartbeat_at > time.time() - max_age)
    with session_scope(engine, write=False) as session:
        return pd.DataFrame(session.execute(query).mappings().all(), columns=cols)


# --- studies --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Study:
    id: int
    name: str
    spec_json: str
    created_at: float

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(self.spec_json)


def create_study(engine: Engine, name: str, spec_json: str) -> int:
    with session_scope(engine) as session:
        row = StudyRow(name=name, spec_json=spec_json, created_at=time.time())
        session.add(row)
        session.flush()
        return row.id


def list_studies(engine: Engine) -> list[Study]:
    with session_scope(engine, write=False) as session:
        return [Study(r.id, r.name, r.spec_json, r.created_at)
                for r in session.scalars(select(StudyRow).order_by(StudyRow.id))]


def find_study_or_raise(engine: Engine, study_id: int) -> Study:
    with session_scope(engine, write=False) as session:
        r = session.get(StudyRow, study_id)
        if r is None:
            raise LookupError(f"study {study_id} does not exist")
        return Study(r.id, r.name, r.spec_json, r.created_at)
