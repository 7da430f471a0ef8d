"""Runs: create, find, list, delete. State changes after creation live in `storage.lifecycle`."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import Engine, delete, select

from storage.clock import db_now
from storage.engine import session_scope
from storage.models import EpochMetricRow, LayerStatRow, RunRow
from storage.records import NewRun, Run, RunNotFound, run_from
from storage.status import RunStatus


def create_runs(engine: Engine, new_runs: list[NewRun]) -> list[int]:
    """Queue runs in one transaction (all or nothing); returns their ids in order."""
    now = db_now()
    ids = []
    with session_scope(engine) as session:
        for new in new_runs:
            row = RunRow(**asdict(new), status=RunStatus.QUEUED.value, created_at=now,
                         cancel_requested=False)
            session.add(row)
            session.flush()
            ids.append(row.id)
    return ids


def find_run(engine: Engine, run_id: int) -> Run | None:
    with session_scope(engine, write=False) as session:
        row = session.get(RunRow, run_id)
        return run_from(row) if row else None


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
    """Runs in id order, narrowed by any of the filters given."""
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
        return [run_from(row) for row in session.scalars(query)]


def delete_run(engine: Engine, run_id: int) -> None:
    """Delete a run and its epochs; a running run must be cancelled first (ValueError)."""
    with session_scope(engine) as session:
        row = session.get(RunRow, run_id)
        if row is None:
            raise RunNotFound(run_id)
        if row.status == RunStatus.RUNNING:
            raise ValueError(f"run {run_id} is running; cancel it before deleting it")
        session.execute(delete(EpochMetricRow).where(EpochMetricRow.run_id == run_id))
        session.execute(delete(LayerStatRow).where(LayerStatRow.run_id == run_id))
        session.delete(row)
