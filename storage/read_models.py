"""Read models: what pages and the CLI show, built in SQL with only the columns they show.

Listings never load ORM objects. A run's epoch aggregates (epochs done, best validation
accuracy, the last epoch's values) are computed in SQL from its epochs through the
(run_id, epoch) unique index: for a page of runs, only that page's runs are aggregated; sorting
by an aggregate aggregates every run that passes the filters, once, in the same statement.
Filters, sort and paging run in SQL (`runs_page`), so a page costs the same at 10 runs or 10,000
(benchmarks/dashboard_scale.py measures it). Which runs a listing holds (`RunFilter`, config
conditions, metric ranges) is storage.run_filters.

Pages poll with `change_token` (one indexed question: has anything a listing shows changed?);
curves are storage.curves.

pandas is imported only by the functions that return frames: the CLI lists and shows runs
without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Engine, Select, and_, case, func, select
from sqlalchemy.orm import aliased

from storage.engine import rows_as_dicts, session_scope
from storage.models import EpochMetricRow, RunRow
from storage.records import RUN_FIELDS, Run
from storage.run_filters import RunFilter
from storage.runs import list_runs
from storage.status import ACTIVE, RunStatus

if TYPE_CHECKING:
    import pandas as pd

AGGREGATE_COLUMNS = ["epochs_done", "best_val_accuracy", "last_epoch", "final_val_accuracy",
                     "final_accuracy", "final_val_loss"]
# What the Runs table, its picker and `python -m cnn_ablation runs` show of each run (never the
# config, notes, traceback or confusion matrix: those are read for the one run on screen).
LIST_COLUMNS = ["id", "name", "label", "dataset", "preset", "seed", "status", "epochs",
                "study_id", "params", "device", "host", "error", "created_at", "started_at",
                "finished_at", "cancel_requested", "cancel_mode", "phase", "progress_epoch",
                "progress_batch", "progress_batches", "test_accuracy", "test_loss", "tags_json"]
PAGE_SIZE = 50
# Sorts a listing offers: name -> (column, descending). Ties go newest first.
SORTS = {"newest first": ("id", True), "oldest first": ("id", False),
         "best val acc": ("best_val_accuracy", True),
         "final val acc": ("final_val_accuracy", True), "test acc": ("test_accuracy", True)}


# --- listings -------------------------------------------------------------------------------------
def _filter(statuses: Iterable[str] | None = None, datasets: Iterable[str] | None = None,
            study_id: int | None = None, ids: Iterable[int] | None = None,
            config_hashes: Iterable[str] | None = None, text: str = "") -> RunFilter:
    return RunFilter(tuple(statuses or ()), tuple(datasets or ()), study_id,
                     None if ids is None else tuple(ids),
                     None if config_hashes is None else tuple(config_hashes), text)


def _listing(columns: Sequence[str], restrict: Any = None) -> tuple[Select[Any], Any, Any]:
    """SELECT `columns` of runs with their epoch aggregates (AGGREGATE_COLUMNS). `restrict`:
    a selectable of run ids whose epochs alone are aggregated (None: every run's)."""
    epochs = EpochMetricRow
    agg = select(epochs.run_id.label("run_id"), func.count().label("epochs_done"),
                 func.max(epochs.val_accuracy).label("best_val_accuracy"),
                 func.max(epochs.epoch).label("last_epoch")).group_by(epochs.run_id)
    if restrict is not None:
        agg = agg.where(epochs.run_id.in_(restrict))
    agg_sq = agg.subquery("agg")
    last = aliased(EpochMetricRow, name="last_row")
    query = select(
        *[getattr(RunRow, c) for c in columns],
        func.coalesce(agg_sq.c.epochs_done, 0).label("epochs_done"),
        agg_sq.c.best_val_accuracy, agg_sq.c.last_epoch,
        last.val_accuracy.label("final_val_accuracy"), last.accuracy.label("final_accuracy"),
        last.val_loss.label("final_val_loss"),
    ).select_from(RunRow).outerjoin(agg_sq, agg_sq.c.run_id == RunRow.id).outerjoin(
        last, and_(last.run_id == RunRow.id, last.epoch == agg_sq.c.last_epoch))
    return query, agg_sq, last


def _order(sort: str, agg: Any = None, last: Any = None) -> list[Any]:
    """ORDER BY for `sort` (SORTS): NULLs last either way, ties newest first. `agg` and `last`
    (from `_listing`) are needed only to sort by an aggregate."""
    column, descending = SORTS[sort]
    if column == "id":
        return [RunRow.id.desc() if descending else RunRow.id.asc()]
    target = {"best_val_accuracy": agg.c.best_val_accuracy if agg is not None else None,
              "final_val_accuracy": last.val_accuracy if last is not None else None
              }.get(column, getattr(RunRow, column, None))
    if target is None:
        raise ValueError(f"sorting by {column} needs the aggregates of _listing")
    return [target.desc().nulls_last() if descending else target.asc().nulls_last(),
            RunRow.id.desc()]


def _needs_aggregates(sort: str) -> bool:
    return SORTS[sort][0] in AGGREGATE_COLUMNS


@dataclass(frozen=True)
class RunsPage:
    """One page of a listing: its rows (dicts with the columns asked for and AGGREGATE_COLUMNS),
    the page number (1-based, clamped to the pages there are), and how many runs match."""

    rows: list[dict[str, Any]]
    page: int
    pages: int
    total: int
    per_page: int = PAGE_SIZE

    @property
    def first(self) -> int:
        """1-based position of the first row shown (0 when none)."""
        return (self.page - 1) * self.per_page + 1 if self.rows else 0


def runs_page(engine: Engine, filters: RunFilter = RunFilter(), sort: str = "newest first",
              page: int = 1, per_page: int = PAGE_SIZE,
              columns: Sequence[str] = LIST_COLUMNS) -> RunsPage:
    """The `page`-th `per_page` runs that pass `filters`, sorted by `sort` (SORTS): one COUNT
    for the pager, one SELECT for the rows, aggregates for the shown runs only (or, sorting by
    an aggregate, for every run that passes the filters)."""
    where = filters.clauses()
    with session_scope(engine, write=False) as session:
        total = int(session.scalar(select(func.count(RunRow.id)).where(*where)) or 0)
        pages = max(1, math.ceil(total / per_page))
        page = min(max(1, int(page)), pages)
        offset = (page - 1) * per_page
        if _needs_aggregates(sort):
            query, agg, last = _listing(columns)
            query = query.where(*where).order_by(*_order(sort, agg, last))
        else:
            shown = select(RunRow.id).where(*where).order_by(*_order(sort))
            shown_ids = shown.limit(per_page).offset(offset).scalar_subquery()
            query, agg, last = _listing(columns, restrict=shown_ids)
            query = query.where(RunRow.id.in_(shown_ids)).order_by(*_order(sort, agg, last))
            offset = 0
        rows = rows_as_dicts(session, query.limit(per_page).offset(offset))
    return RunsPage(rows, page, pages, total, per_page)


def run_rows(engine: Engine, filters: RunFilter = RunFilter(), sort: str = "oldest first",
             columns: Sequence[str] = LIST_COLUMNS) -> list[dict[str, Any]]:
    """Every run that passes `filters` as a dict (`columns` and AGGREGATE_COLUMNS), in one
    SELECT; no pandas (what `python -m cnn_ablation runs` prints)."""
    where = filters.clauses()
    restrict = select(RunRow.id).where(*where).scalar_subquery() if where else None
    query, agg, last = _listing(columns, restrict)
    query = query.where(*where).order_by(*_order(sort, agg, last))
    with session_scope(engine, write=False) as session:
        return rows_as_dicts(session, query)


def runs_frame(engine: Engine, **filters: Any) -> pd.DataFrame:
    """One row per run (every stored column; filters as `RunFilter`), in id order, with its
    epoch aggregates: epochs_done, best_val_accuracy, last_epoch and the last epoch's values
    (final_val_accuracy, final_accuracy, final_val_loss)."""
    import pandas as pd

    rows = run_rows(engine, _filter(**filters), columns=RUN_FIELDS)
    return pd.DataFrame(rows, columns=RUN_FIELDS + AGGREGATE_COLUMNS)


# --- small questions pages ask often ---------------------------------------------------------------
class ChangeToken(NamedTuple):
    """What changes whenever anything a listing shows may have changed: a new epoch (the epoch
    table's highest id), a run added or deleted (count and highest id of runs), and any change
    to a queued or running run (how many, which, their progress beats and cancel requests).
    Finished runs change only by leaving the active set or by being deleted, both counted."""

    last_epoch_row: int
    runs: int
    last_run: int
    active: int
    active_ids: int
    active_beats: float
    active_cancels: int

    @property
    def runs_version(self) -> tuple[int, int]:
        """Changes when runs are added or deleted (what option lists depend on)."""
        return self.runs, self.last_run


def change_token(engine: Engine) -> ChangeToken:
    """One cheap, indexed query (the epoch table's primary key, the runs' status index): pages
    ask it every second and redraw only when its answer changed."""
    active = RunRow.status.in_([str(s) for s in ACTIVE])
    query = select(
        select(func.max(EpochMetricRow.id)).scalar_subquery(),
        select(func.count(RunRow.id)).scalar_subquery(),
        select(func.max(RunRow.id)).scalar_subquery(),
        select(func.count(RunRow.id)).where(active).scalar_subquery(),
        select(func.sum(RunRow.id)).where(active).scalar_subquery(),
        select(func.sum(func.coalesce(RunRow.progress_at, 0.0))).where(active).scalar_subquery(),
        select(func.sum(case((RunRow.cancel_requested, 1), else_=0))).where(active)
        .scalar_subquery(),
    )
    with session_scope(engine, write=False) as session:
        epoch_id, runs, last_run, active_n, ids, beats, cancels = session.execute(query).one()
    return ChangeToken(int(epoch_id or 0), int(runs or 0), int(last_run or 0), int(active_n or 0),
                       int(ids or 0), float(beats or 0.0), int(cancels or 0))


def datasets_in_use(engine: Engine) -> list[str]:
    """Every dataset some run names, sorted (the Runs page's filter)."""
    with session_scope(engine, write=False) as session:
        return list(session.scalars(select(RunRow.dataset).distinct().order_by(RunRow.dataset)))


def tags_in_use(engine: Engine) -> list[str]:
    """Every tag some run carries, sorted (the Runs page's tag filter)."""
    import json

    with session_scope(engine, write=False) as session:
        stored = session.scalars(select(RunRow.tags_json).distinct().where(
            RunRow.tags_json.is_not(None), RunRow.tags_json != "[]"))
        return sorted({str(tag) for text in stored for tag in json.loads(text or "[]")})


def run_labels(engine: Engine) -> list[tuple[int, str, str]]:
    """(id, name, config label) of every run, in id order: a picker's options."""
    with session_scope(engine, write=False) as session:
        rows = session.execute(select(RunRow.id, RunRow.name, RunRow.label).order_by(RunRow.id))
        return [(int(i), name or "", label) for i, name, label in rows]


def variants(engine: Engine) -> list[dict[str, Any]]:
    """One row per variant (config without the seed): variant_hash, label, dataset, runs."""
    query = select(RunRow.variant_hash, func.min(RunRow.label).label("label"),
                   func.min(RunRow.dataset).label("dataset"),
                   func.count(RunRow.id).label("runs")).group_by(RunRow.variant_hash) \
        .order_by(func.min(RunRow.id))
    with session_scope(engine, write=False) as session:
        return [dict(r) for r in session.execute(query).mappings()]


def variant_run_ids(engine: Engine, variant_hash: str) -> list[int]:
    with session_scope(engine, write=False) as session:
        return list(session.scalars(select(RunRow.id).where(RunRow.variant_hash == variant_hash)
                                    .order_by(RunRow.id)))


def latest_ids(engine: Engine, status: str | None = None, n: int = 2) -> list[int]:
    """The `n` newest run ids (of `status`), oldest of them first."""
    query = select(RunRow.id).order_by(RunRow.id.desc()).limit(n)
    if status is not None:
        query = query.where(RunRow.status == status)
    with session_scope(engine, write=False) as session:
        return sorted(session.scalars(query))


# --- other questions --------------------------------------------------------------------------------
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
