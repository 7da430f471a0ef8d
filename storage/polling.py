"""What pages poll and shared caches are keyed by: cheap, indexed questions whose answer changes
whenever what a page shows may have changed (`change_token` for the run listings, `any_active`
while runs are queued or running, `runs_fingerprint` for one study's runs), so a page redraws and
a cache reads again only when something did change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Engine, case, func, select

from cnn_ablation.storage.engine import session_scope
from cnn_ablation.storage.models import EpochMetricRow, RunDeletionsRow, RunRow
from cnn_ablation.storage.status import ACTIVE


class ChangeToken(NamedTuple):
    """What changes whenever anything a listing shows may have changed: a new epoch (the epoch
    table's highest id), a run added (the highest run id: ids are never given out twice) or
    deleted (the count of deletions, `run_deletions`), and any change to a queued or running run
    (how many, which, their progress beats and cancel requests). Finished runs change only by
    leaving the active set or by being deleted, both counted. Nothing in it counts the runs."""

    last_epoch_row: int
    deletions: int
    last_run: int
    active: int
    active_ids: int
    active_beats: float
    active_cancels: int

    @property
    def any_runs(self) -> bool:
        """Whether any run is stored (the highest id of none is 0)."""
        return self.last_run > 0

    @property
    def runs_version(self) -> tuple[int, int]:
        """Changes when runs are added or deleted (what option lists depend on)."""
        return self.deletions, self.last_run


def change_token(engine: Engine) -> ChangeToken:
    """One cheap query, each part one step down an index (the epochs' and runs' primary keys,
    the one row of run_deletions) or over the active runs alone (the runs' status index):
    pages ask it every second and redraw only when its answer changed."""
    active = RunRow.status.in_([str(s) for s in ACTIVE])
    query = select(
        select(func.max(EpochMetricRow.id)).scalar_subquery(),
        select(RunDeletionsRow.deletions).where(RunDeletionsRow.id == 1).scalar_subquery(),
        select(func.max(RunRow.id)).scalar_subquery(),
        select(func.count(RunRow.id)).where(active).scalar_subquery(),
        select(func.sum(RunRow.id)).where(active).scalar_subquery(),
        select(func.sum(func.coalesce(RunRow.progress_at, 0.0))).where(active).scalar_subquery(),
        select(func.sum(case((RunRow.cancel_requested, 1), else_=0))).where(active)
        .scalar_subquery(),
    )
    with session_scope(engine, write=False) as session:
        epoch_id, deletions, last_run, active_n, ids, beats, cancels = \
            session.execute(query).one()
    return ChangeToken(int(epoch_id or 0), int(deletions or 0), int(last_run or 0),
                       int(active_n or 0), int(ids or 0), float(beats or 0.0), int(cancels or 0))


def any_active(engine: Engine, config_hashes: list[str] | None = None) -> bool:
    """Whether any run (of these configs, if given) is queued or running: pages poll while so."""
    query = select(RunRow.id).where(RunRow.status.in_(ACTIVE))
    if config_hashes is not None:
        query = query.where(RunRow.config_hash.in_(config_hashes))
    with session_scope(engine, write=False) as session:
        return session.scalar(query.limit(1)) is not None


def runs_fingerprint(engine: Engine, config_hashes: Sequence[str]) -> tuple:
    """Changes whenever anything a study's results depend on changes among the runs of these
    configs: a run added, deleted, started, finished, failed or cancelled (its status and
    times). One indexed query: what a shared cache of the results is keyed by."""
    if not config_hashes:
        return ()
    query = (select(RunRow.status, func.count(RunRow.id), func.max(RunRow.id),
                    func.sum(RunRow.id), func.max(RunRow.finished_at),
                    func.max(RunRow.started_at))
             .where(RunRow.config_hash.in_(list(config_hashes)))
             .group_by(RunRow.status).order_by(RunRow.status))
    with session_scope(engine, write=False) as session:
        return tuple(tuple(row) for row in session.execute(query))
