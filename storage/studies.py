"""Studies as stored: a name and a StudySpec as JSON (its adaptive rule and that rule's state
included). Their runs are found by config hash. Also the read model a study's time estimate is
built from (`run_timings`)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, cast

import pandas as pd
from sqlalchemy import CursorResult, Engine, delete, select, update

from cnn_ablation.storage.engine import session_scope
from cnn_ablation.storage.models import EpochMetricRow, RunRow, StudyRow
from cnn_ablation.storage.records import NewRun, Study, StudyNotFound
from cnn_ablation.storage.status import RunStatus


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
            raise StudyNotFound(study_id)
        return Study(r.id, r.name, r.spec_json, r.created_at)


def replace_spec(engine: Engine, study_id: int, old_json: str, new_json: str,
                 new_runs: list[NewRun] | None = None) -> list[int] | None:
    """In one write transaction: store `new_json` as the study's spec if it still is `old_json`,
    and queue `new_runs`. Returns their ids, or None when the spec had changed (someone else
    advanced or stopped the study first): then nothing is written. Callers racing here (the
    worker, a page refresh, `study show`) queue a round exactly once between them."""
    now = time.time()
    with session_scope(engine) as session:
        changed = cast("CursorResult[Any]", session.execute(update(StudyRow).where(
            StudyRow.id == study_id, StudyRow.spec_json == old_json).values(spec_json=new_json)))
        if changed.rowcount != 1:
            return None
        ids = []
        for new in new_runs or []:
            row = RunRow(**asdict(new), status=RunStatus.QUEUED.value, created_at=now,
                         cancel_requested=False)
            session.add(row)
            session.flush()
            ids.append(row.id)
        return ids


def delete_study(engine: Engine, study_id: int) -> None:
    """Delete the study; its runs stay, no longer part of it (delete them first to remove
    them: `storage.runs.delete_run`)."""
    with session_scope(engine) as session:
        if session.get(StudyRow, study_id) is None:
            raise StudyNotFound(study_id)
        session.execute(update(RunRow).where(RunRow.study_id == study_id).values(study_id=None))
        session.execute(delete(StudyRow).where(StudyRow.id == study_id))


TIMING_COLUMNS = ["run_id", "config_json", "device", "host", "worker_id", "started_at",
                  "finished_at", "epochs_done", "startup_s", "first_epoch_s", "later_epoch_s",
                  "test_s"]


def run_timings(engine: Engine, preset: str, dataset: str, hosts: list[str] | None = None,
                devices: list[str] | None = None, recent: int | None = None) -> pd.DataFrame:
    """Where the time of each completed run of one preset and dataset went (on `hosts` and
    `devices` if given; runs resumed from a checkpoint left out): start-up (claimed ->
    first epoch began: process, imports, data, model), the first epoch (graph tracing
    included), the mean of the later epochs, and the test pass (last epoch -> finished), all
    in seconds, from `epoch_metrics.seconds` and `recorded_at`. `recent`: only the runs that
    finished last (the query reads their epochs only: a lab's database has thousands)."""
    query = select(RunRow.id, RunRow.config_json, RunRow.device, RunRow.host, RunRow.worker_id,
                   RunRow.started_at, RunRow.finished_at).where(
        RunRow.status == RunStatus.COMPLETED, RunRow.preset == preset, RunRow.dataset == dataset,
        RunRow.resume_epoch.is_(None), RunRow.started_at.is_not(None),
        RunRow.finished_at.is_not(None))
    if hosts:
        query = query.where(RunRow.host.in_(hosts))
    if devices:
        query = query.where(RunRow.device.in_(devices))
    if recent is not None:
        query = query.order_by(RunRow.finished_at.desc(), RunRow.id.desc()).limit(recent)
    with session_scope(engine, write=False) as session:
        runs = pd.DataFrame(session.execute(query).mappings().all(),
                            columns=["id", "config_json", "device", "host", "worker_id",
                                     "started_at", "finished_at"])
        if runs.empty:
            return pd.DataFrame(columns=TIMING_COLUMNS)
        epochs = pd.DataFrame(session.execute(
            select(EpochMetricRow.run_id, EpochMetricRow.epoch, EpochMetricRow.seconds,
                   EpochMetricRow.recorded_at)
            .where(EpochMetricRow.run_id.in_(runs["id"].tolist()))
            .order_by(EpochMetricRow.run_id, EpochMetricRow.epoch)).mappings().all(),
            columns=["run_id", "epoch", "seconds", "recorded_at"])
    rows = []
    by_run = dict(iter(epochs.groupby("run_id", sort=False)))
    for run in runs.to_dict("records"):
        mine = by_run.get(run["id"])
        if mine is None or int(mine["epoch"].iloc[0]) != 1:
            continue
        first = mine.iloc[0]
        later = mine.iloc[1:]
        rows.append({
            "run_id": run["id"], "config_json": run["config_json"], "device": run["device"],
            "host": run["host"], "worker_id": run["worker_id"], "started_at": run["started_at"],
            "finished_at": run["finished_at"], "epochs_done": len(mine),
            "startup_s": float(first["recorded_at"] - first["seconds"] - run["started_at"]),
            "first_epoch_s": float(first["seconds"]),
            "later_epoch_s": float(later["seconds"].mean()) if len(later) else float("nan"),
            "test_s": float(run["finished_at"] - mine["recorded_at"].iloc[-1]),
        })
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)


def handover_seconds(engine: Engine, worker_ids: list[str], recent: int = 200) -> list[float]:
    """Gaps between one run's end and the next claim by the same worker on the same device
    (a training process exiting, the worker noticing, claiming, starting the next): what a
    queue of runs costs besides the runs themselves, over the `recent` runs these workers
    started last. Gaps over a minute (an empty queue) are left out."""
    if not worker_ids:
        return []
    query = select(RunRow.worker_id, RunRow.device, RunRow.started_at, RunRow.finished_at).where(
        RunRow.worker_id.in_(worker_ids), RunRow.started_at.is_not(None),
        RunRow.finished_at.is_not(None)).order_by(RunRow.started_at.desc()).limit(recent)
    with session_scope(engine, write=False) as session:
        rows = sorted(session.execute(query).all(), key=lambda r: (r[0], r[1], r[2]))
    gaps = []
    for previous, current in zip(rows, rows[1:], strict=False):
        if (previous[0], previous[1]) == (current[0], current[1]):
            gap = float(current[2] or 0) - float(previous[3] or 0)
            if 0 <= gap <= 60:
                gaps.append(float(gap))
    return gaps

