"""The runs listing: what the Runs table, its pager, the run picker, Compare and `python -m
cnn_ablation runs` show of many runs, built in SQL with only the columns they show.

Listings never load ORM objects. A run's epoch aggregates (epochs done, best validation
accuracy, the last epoch's values) are columns of the run, kept by `lifecycle.record_epoch` in
each epoch's transaction (`store_epoch_aggregates` computes them from the epochs, for runs whose
epochs were written another way), so a listing reads no epoch rows, and every sort it offers is
an index (migration 0007): a page of 50 runs reads 50 index entries, whatever the sort, at 100
or 100,000 runs. Filters, sort and paging run in SQL (`runs_page`); benchmarks/dashboard_scale.py
measures it. Which runs a listing holds (`RunFilter`, config conditions, metric ranges) is
storage.run_filters; what pages poll is storage.polling, curves are storage.curves. pandas is
imported only by `runs_frame`: the CLI lists runs without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Select, func, select, update

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


def _listing(columns: Sequence[str]) -> Select[Any]:
    """SELECT `columns` of runs with their epoch aggregates (AGGREGATE_COLUMNS)."""
    wanted = [*columns, *(c for c in AGGREGATE_COLUMNS if c not in columns)]
    return select(*[getattr(RunRow, c) for c in wanted])


def _order(sort: str) -> list[Any]:
    """ORDER BY for `sort` (SORTS): NULLs last either way, ties newest first; for a metric,
    exactly the order of its index (models: ix_runs_<metric>)."""
    column, descending = SORTS[sort]
    if column == "id":
        return [RunRow.id.desc() if descending else RunRow.id.asc()]
    target = getattr(RunRow, column)
    return [target.desc().nulls_last() if descending else target.asc().nulls_last(),
            RunRow.id.desc()]


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
    for the pager, one SELECT for the rows (read in the sort's index order)."""
    where = filters.clauses()
    with session_scope(engine, write=False) as session:
        total = int(session.scalar(_count(where)) or 0)
        pages = max(1, math.ceil(total / per_page))
        page = min(max(1, int(page)), pages)
        query = _listing(columns).where(*where).order_by(*_order(sort))
        rows = rows_as_dicts(session, query.limit(per_page).offset((page - 1) * per_page))
    return RunsPage(rows, page, pages, total, per_page)


def _count(where: list[Any]) -> Select[Any]:
    # count(*): PostgreSQL counts from any index that holds the filter's columns (no table read)
    return select(func.count()).select_from(RunRow).where(*where)


def count_runs(engine: Engine, filters: RunFilter = RunFilter()) -> int:
    """How many runs pass `filters` (one COUNT, no rows read into Python)."""
    with session_scope(engine, write=False) as session:
        return int(session.scalar(_count(filters.clauses())) or 0)


def run_rows(engine: Engine, filters: RunFilter = RunFilter(), sort: str = "oldest first",
             columns: Sequence[str] = LIST_COLUMNS,
             newest: int | None = None) -> list[dict[str, Any]]:
    """Every run that passes `filters` (with `newest`, only the newest N of them) as a dict
    (`columns` and AGGREGATE_COLUMNS), in `sort` order, in one SELECT; no pandas (what `python
    -m cnn_ablation runs` prints)."""
    where = filters.clauses()
    if newest is not None:
        where = [RunRow.id.in_(select(RunRow.id).where(*where).order_by(RunRow.id.desc())
                               .limit(newest).scalar_subquery())]
    query = _listing(columns).where(*where).order_by(*_order(sort))
    with session_scope(engine, write=False) as session:
        return rows_as_dicts(session, query)


def runs_frame(engine: Engine, **filters: Any) -> pd.DataFrame:
    """One row per run (every stored column; filters as `RunFilter`), in id order, with its
    epoch aggregates: epochs_done, best_val_accuracy, last_epoch and the last epoch's values
    (final_val_accuracy, final_accuracy, final_val_loss)."""
    import pandas as pd

    rows = run_rows(engine, _filter(**filters), columns=RUN_FIELDS)
    return pd.DataFrame(rows, columns=RUN_FIELDS + AGGREGATE_COLUMNS)




def store_epoch_aggregates(engine: Engine) -> None:
    """Compute every run's epoch aggregates from its epoch rows and store them on the run: for
    epochs written other than by `lifecycle.record_epoch`, which keeps them itself (a bulk
    import: benchmarks/scale_db.py). Two UPDATEs, each run's epochs read through the
    (run_id, epoch) index."""
    with session_scope(engine) as session:
        for statement in aggregate_updates():
            session.execute(statement)


def aggregate_updates(run_id: int | None = None) -> list[Any]:
    """The two UPDATEs that set runs' epoch aggregates from their epoch rows (of every run, or
    of `run_id`): `store_epoch_aggregates`, and `lifecycle.finish` for its run (whose epochs a
    process on code older than migration 0007 may have written without them)."""
    epochs = EpochMetricRow
    mine = epochs.run_id == RunRow.id

    def of_run(value: Any) -> Any:
        return select(value).where(mine).correlate(RunRow).scalar_subquery()

    def at_last(column: Any) -> Any:
        return select(column).where(mine, epochs.epoch == RunRow.last_epoch) \
            .correlate(RunRow).scalar_subquery()

    which = [] if run_id is None else [RunRow.id == run_id]
    return [update(RunRow).where(*which).values(
                epochs_done=of_run(func.count()),
                best_val_accuracy=of_run(func.max(epochs.val_accuracy)),
                last_epoch=of_run(func.max(epochs.epoch))),
            update(RunRow).where(*which).values(
                final_val_accuracy=at_last(epochs.val_accuracy),
                final_accuracy=at_last(epochs.accuracy), final_val_loss=at_last(epochs.val_loss))]
