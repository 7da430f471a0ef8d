"""The runs listing: what the Runs table, its pager, the run picker, Compare and `python -m
cnn_ablation runs` show of many runs, built in SQL with only the columns they show.

Listings never load ORM objects. A run's epoch aggregates (epochs done, best validation
accuracy, the last epoch's values) are computed in SQL from its epochs through the
(run_id, epoch) unique index: for a page of runs, only that page's runs are aggregated; sorting
by an aggregate aggregates every run that passes the filters, once, in the same statement.
Filters, sort and paging run in SQL (`runs_page`), so a page costs the same at 10 runs or 10,000
(benchmarks/dashboard_scale.py measures it). Which runs a listing holds (`RunFilter`, config
conditions, metric ranges) is storage.run_filters; what pages poll is storage.polling, curves are
storage.curves. pandas is imported only by `runs_frame`: the CLI lists runs without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Select, and_, func, select
from sqlalchemy.orm import aliased

from cnn_ablation.storage.engine import rows_as_dicts, session_scope
from cnn_ablation.storage.models import EpochMetricRow, RunRow
from cnn_ablation.storage.records import RUN_FIELDS
from cnn_ablation.storage.run_filters import RunFilter

if TYPE_CHECKING:
    import pandas as pd

AGGREGATE_COLUMNS = ["epochs_done", "best_val_accuracy", "last_epoch", "final_val_accuracy",
                     "final_accuracy", "final_val_loss"]
# What the Runs table, its picker and `python -m cnn_ablation runs` show of each run (never the
# config, notes, traceback or confusion matrix: those are read for the one run on screen).
LIST_COLUMNS = ["id", "name", "label", "dataset", "preset", "seed", "status", "epochs",
                "study_id", "params", "device", "backend", "host", "error", "created_at", "started_at",
                "finished_at", "cancel_requested", "cancel_mode", "phase", "progress_epoch",
                "progress_batch", "progress_batches", "test_accuracy", "test_loss", "tags_json"]
PAGE_SIZE = 50
# Sorts a listing offers: name -> (column, descending). Ties go newest first.
SORTS = {"newest first": ("id", True), "oldest first": ("id", False),
         "best val acc": ("best_val_accuracy", True),
         "final val acc": ("final_val_accuracy", True), "test acc": ("test_accuracy", True)}


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

