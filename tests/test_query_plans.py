"""What the database does for the questions pages ask at 100,000 runs x 50 epochs (issue 24):
the statements the storage functions send are captured as they run and explained by the database
itself, on SQLite and on PostgreSQL. A listing page, whatever its sort or metric filter, is read
in index order (no sort of every run, no epoch rows read); the pickers' options come from
indexes; what pages poll every second reads no epochs. On PostgreSQL, scans of whole tables and
sorts are priced out (`enable_seqscan`, `enable_sort` off), so a plan shows one only where no
index can serve: a small test table never hides a missing index.

Runs' epoch aggregates are kept on the run by `record_epoch`; `store_epoch_aggregates` computes
the same from the epochs (what a bulk import and migration 0007 do)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update

from cnn_ablation.config import RunConfig
from cnn_ablation.storage import lifecycle, listings, lookups, polling
from cnn_ablation.storage.engine import session_scope
from cnn_ablation.storage.listings import AGGREGATE_COLUMNS, SORTS
from cnn_ablation.storage.models import RunRow
from cnn_ablation.storage.run_filters import RunFilter
from tests.support import TEST_WORKER

pytestmark = pytest.mark.both_backends


@contextlib.contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every SELECT the engine sends meanwhile, with its parameters."""
    sent: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def plan(engine: Engine, statement: str, parameters: Any) -> list[str]:
    """The database's plan of `statement`, one step per item: SQLite's EXPLAIN QUERY PLAN lines
    (`SCAN runs USING INDEX ix_...`, `SEARCH runs ...`, `USE TEMP B-TREE FOR ORDER BY`);
    PostgreSQL's nodes as `Index Scan runs ix_...`, `Seq Scan runs`, `Sort`, with ` cond` when
    the index is searched for a value and ` limited` when a Limit stops it early."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            return [row[-1] for row in rows]
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_sort = off")
        (found,) = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).one()
        conn.rollback()
    steps: list[str] = []

    def walk(node: dict, limited: bool) -> None:
        words = [str(node[k]) for k in ("Node Type", "Relation Name", "Index Name") if k in node]
        if "Index Cond" in node or "Recheck Cond" in node:  # searched (a bitmap's: rechecked)
            words.append("cond")
        if limited:
            words.append("limited")
        steps.append(" ".join(words))
        for child in node.get("Plans", []):
            walk(child, limited or node["Node Type"] == "Limit")

    walk((json.loads(found) if isinstance(found, str) else found)[0]["Plan"], False)
    return steps


def plans_of(engine: Engine, call: Callable[[], Any]) -> list[list[str]]:
    """The plan of every SELECT that `call()` sends."""
    with captured(engine) as sent:
        call()
    assert sent, "nothing was read"
    return [plan(engine, statement, parameters) for statement, parameters in sent]


def sorts(steps: list[str]) -> list[str]:
    """The steps that sort what was read (it was not read in the order wanted)."""
    return [s for s in steps if "TEMP B-TREE" in s or s.startswith(("Sort", "Incremental Sort"))]


def reads_table(table: str, steps: list[str]) -> bool:
    """Whether a step reads `table`'s rows other than through an index. (SQLite's `SCAN t` in
    the order a LIMIT asks for stops at the limit: use it only where no LIMIT is.)"""
    return any(s in (f"SCAN {table}", f"Seq Scan {table}") for s in steps)


def reads_every_row(table: str, steps: list[str]) -> bool:
    """Whether a step goes over every row of `table`, in the table or in one of its indexes:
    SQLite's `SCAN`, PostgreSQL's scans that neither search the index nor stop at a limit."""
    for step in steps:
        words = step.split()
        if step.startswith(f"SCAN {table}") or (
                "Scan" in words and table in words and "cond" not in words
                and "limited" not in words):
            return True
    return False


def reads_epochs(steps: list[str]) -> bool:
    return any("epoch_metrics" in s for s in steps)


@pytest.fixture
def some_runs(engine, make_run):
    """Runs with and without epochs, a tagged one, two datasets."""
    ids = [make_run(RunConfig(dataset="synthetic", seed=s), accuracies=[0.3, 0.5 + s / 100])
           for s in range(4)]
    ids.append(make_run(RunConfig(dataset="mnist", seed=9), "queued"))
    ids.append(make_run(RunConfig(dataset="mnist", seed=10), "failed", tags_json='["keep"]'))
    return ids


@pytest.mark.parametrize("sort", list(SORTS))
def test_a_runs_page_is_read_in_its_sort_s_index_order_without_epochs(engine, some_runs, sort):
    page = listings.runs_page(engine, RunFilter(), sort, per_page=2)
    assert len(page.rows) == 2 and page.total == len(some_runs)
    count, rows = plans_of(engine, lambda: listings.runs_page(engine, RunFilter(), sort,
                                                              per_page=2))
    assert not sorts(rows), rows
    assert "Seq Scan runs" not in rows, rows  # PostgreSQL: the key or the metric's index
    assert not reads_epochs(rows) and not reads_epochs(count), (count, rows)
    column, _ = SORTS[sort]
    if column != "id":  # read through the metric's own index, best first
        assert any(f"ix_runs_{column}" in step for step in rows), rows


@pytest.mark.parametrize("metric", ["best_val_accuracy", "final_val_accuracy", "test_accuracy"])
def test_a_metric_range_is_an_index_range_and_reads_no_epochs(engine, some_runs, metric):
    narrowed = RunFilter(metrics=((metric, 0.4, None),))
    assert listings.runs_page(engine, narrowed, "newest first").total > 0
    for steps in plans_of(engine, lambda: listings.runs_page(engine, narrowed, "best val acc")):
        assert not reads_epochs(steps), steps
    (count, _) = plans_of(engine, lambda: listings.runs_page(engine, narrowed))
    assert any(f"ix_runs_{metric}" in step for step in count), count
    assert not reads_table("runs", count), count


def test_what_pages_poll_goes_over_no_table(engine, some_runs):
    """The change token asks for the epoch table's and the runs' highest ids (one step down each
    primary key), the one row counting deletions, and sums over the active runs (the status
    index): nothing in it grows with the runs or epochs stored."""
    (steps,) = plans_of(engine, lambda: polling.change_token(engine))
    assert not reads_every_row("epoch_metrics", steps), "\n".join(steps)
    assert not reads_every_row("runs", steps), "\n".join(steps)
    for steps in plans_of(engine, lambda: polling.any_active(engine)):
        assert not reads_every_row("runs", steps), steps


def test_the_pickers_options_come_from_indexes(engine, some_runs):
    assert lookups.datasets_in_use(engine) == ["mnist", "synthetic"]
    assert lookups.tags_in_use(engine) == ["keep"]
    assert [(v["dataset"], v["runs"]) for v in lookups.variants(engine)] == [("synthetic", 4),
                                                                             ("mnist", 2)]
    for call, index in ((lambda: lookups.datasets_in_use(engine), "ix_runs_dataset"),
                        (lambda: lookups.tags_in_use(engine), "ix_runs_tagged"),
                        (lambda: lookups.variants(engine), "ix_runs_variant")):
        (steps,) = plans_of(engine, call)
        assert any(index in step for step in steps), steps
        assert not reads_table("runs", steps), steps


def test_the_newest_runs_for_a_picker_are_read_from_the_key(engine, some_runs):
    assert [i for i, _, _ in lookups.run_labels(engine, newest=2)] == some_runs[-2:]
    (steps,) = plans_of(engine, lambda: lookups.run_labels(engine, newest=2))
    assert not sorts(steps) and "Seq Scan runs" not in steps, steps


def aggregates(engine) -> dict[int, tuple]:
    with session_scope(engine, write=False) as session:
        rows = session.execute(select(RunRow.id, *[getattr(RunRow, c)
                                                    for c in AGGREGATE_COLUMNS]))
        return {row[0]: tuple(row[1:]) for row in rows}


def test_record_epoch_keeps_the_aggregates_that_the_epochs_give(engine, make_run):
    """What each epoch's transaction stores on the run equals what `store_epoch_aggregates`
    computes from the epoch rows afterwards: the best ignores an epoch without a validation
    accuracy, the final values are the highest epoch's even when it arrived first."""
    plain = make_run(RunConfig(dataset="synthetic"), accuracies=[0.4, 0.9, 0.6])
    never = make_run(RunConfig(dataset="synthetic", seed=1), "queued")
    gaps = make_run(RunConfig(dataset="synthetic", seed=2), "running", [0.5])
    for epoch, val in ((3, None), (2, 0.7)):  # epoch 3 before 2, and without val metrics
        lifecycle.record_epoch(engine, gaps, TEST_WORKER, epoch, {
            "loss": 1.0, "accuracy": 0.1 * epoch, "val_loss": None if val is None else 1.5,
            "val_accuracy": val}, seconds=1.0)
    kept = aggregates(engine)
    assert kept[plain][:3] == (3, pytest.approx(0.85), 3)
    assert kept[never] == (0, None, None, None, None, None)
    assert kept[gaps] == (3, pytest.approx(0.7), 3, None, pytest.approx(0.3), None)
    with session_scope(engine) as session:  # forget them, then compute them from the epochs
        session.execute(update(RunRow).values(epochs_done=0, best_val_accuracy=None,
                                              last_epoch=None, final_val_accuracy=None,
                                              final_accuracy=None, final_val_loss=None))
    listings.store_epoch_aggregates(engine)
    assert aggregates(engine) == kept
