"""Read models: the frames that pages and the CLI show, built in SQL with the columns they need."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, func, or_, select

from storage.engine import session_scope
from storage.models import EpochMetricRow, LayerStatRow, RunRow
from storage.records import RUN_FIELDS, Run
from storage.runs import list_runs
from storage.status import ACTIVE, RunStatus

EPOCH_COLUMNS = ["run_id", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]
LAYER_STAT_COLUMNS = ["run_id", "epoch", "layer", "grad_norm", "weight_norm"]


def runs_frame(engine: Engine, **filters: Any) -> pd.DataFrame:
    """One row per run (filters as `runs.list_runs`) with its epoch aggregates: epochs_done,
    best_val_accuracy, last_epoch and the last epoch's values (final_val_accuracy, ...)."""
    runs = list_runs(engine, **filters)
    frame = pd.DataFrame([r.__dict__ for r in runs], columns=RUN_FIELDS)
    run_ids = frame["id"].tolist()
    agg = select(
        EpochMetricRow.run_id,
        func.count(EpochMetricRow.id).label("epochs_done"),
        func.max(EpochMetricRow.val_accuracy).label("best_val_accuracy"),
        func.max(EpochMetricRow.epoch).label("last_epoch"),
    ).where(EpochMetricRow.run_id.in_(run_ids)).group_by(EpochMetricRow.run_id)

    with session_scope(engine, write=False) as session:
        aggs = pd.DataFrame(session.execute(agg).mappings().all(),
                            columns=["run_id", "epochs_done", "best_val_accuracy", "last_epoch"])
        last = _last_epoch_values(session, run_ids)
    frame = frame.merge(aggs, how="left", left_on="id", right_on="run_id").drop(columns="run_id")
    frame = frame.merge(last, how="left", left_on="id", right_on="run_id").drop(columns="run_id")
    frame["epochs_done"] = frame["epochs_done"].fillna(0).astype(int)
    return frame


def _last_epoch_values(session: Any, run_ids: list[int]) -> pd.DataFrame:
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
    """Per-layer gradient and weight norms of `run_ids`, by run and epoch."""
    query = select(*[getattr(LayerStatRow, c) for c in LAYER_STAT_COLUMNS]).where(
        LayerStatRow.run_id.in_(run_ids)).order_by(LayerStatRow.run_id, LayerStatRow.epoch)
    with session_scope(engine, write=False) as session:
        return pd.DataFrame(session.execute(query).mappings().all(), columns=LAYER_STAT_COLUMNS)


def any_active(engine: Engine, config_hashes: list[str] | None = None) -> bool:
    """Whether any run (of these configs, if given) is queued or running: pages poll while so."""
    query = select(RunRow.id).where(RunRow.status.in_(ACTIVE))
    if config_hashes is not None:
        query = query.where(RunRow.config_hash.in_(config_hashes))
    with session_scope(engine, write=False) as session:
        return session.scalar(query.limit(1)) is not None


def same_config_runs(engine: Engine, config_hashes: list[str]) -> tuple[list[Run], list[Run]]:
    """(completed, queued or running) runs with exactly one of these configs (seed included):
    what New run points out before a variant is launched again."""
    runs = list_runs(engine, config_hashes=config_hashes)
    done = [r for r in runs if r.status == RunStatus.COMPLETED]
    pending = [r for r in runs if r.status in ACTIVE]
    return done, pending


def finished_run_times(engine: Engine, preset: str, dataset: str,
                       host: str | None = None) -> list[tuple[float, str]]:
    """(seconds, config JSON) of completed runs of one preset and dataset (on `host` if given)."""
    query = select(RunRow.started_at, RunRow.finished_at, RunRow.config_json).where(
        RunRow.status == RunStatus.COMPLETED, RunRow.preset == preset, RunRow.dataset == dataset)
    if host:
        query = query.where(RunRow.host == host)
    with session_scope(engine, write=False) as session:
        return [(end - start, config) for start, end, config in session.execute(query)
                if start and end]


class EpochsReader:
    """All epochs of some runs, reading from the database only those newer than it already holds
    (a live page refreshes every few seconds; each refresh reads only the new epochs)."""

    def __init__(self) -> None:
        self._held: dict[int, pd.DataFrame] = {}
        self.rows_read_last = 0  # epoch rows the last `read` fetched: what a refresh cost

    def read(self, engine: Engine, run_ids: list[int]) -> pd.DataFrame:
        after = {rid: int(self._held[rid]["epoch"].max()) for rid in run_ids
                 if rid in self._held and len(self._held[rid])}
        fresh = epochs_frame(engine, run_ids, after=after or None)
        self.rows_read_last = len(fresh)
        for rid in run_ids:
            new = fresh[fresh["run_id"] == rid]
            old = self._held.get(rid)
            self._held[rid] = new if old is None else pd.concat([old, new], ignore_index=True)
        frames = [self._held[rid] for rid in run_ids if len(self._held[rid])]
        return pd.concat(frames, ignore_index=True) if frames else fresh.iloc[0:0]

    def forget(self, run_id: int) -> None:
        """Drop what is held for a run (it was deleted; its id must not show old epochs)."""
        self._held.pop(run_id, None)
