"""A database the size of a busy lab's: by default 10,000 completed runs x 50 epochs (500,000 epoch
rows; `--runs 100000`: 5 million), made with the project's own functions and tables, on SQLite or
PostgreSQL, for benchmarks/dashboard_scale.py and benchmarks/dashboard_browser.py.

Studies are created with `cnn_ablation.studies.grid.create` (which validates every config and queues
its runs through `storage.runs.create_runs`), the other runs with `launch.new_run` +
`create_runs`; then every run is finished as a worker would leave it (status, times, device,
test metrics and confusion matrix), and its epochs are written in bulk into the real
`epoch_metrics` table (5 million `record_epoch` transactions would take hours; the rows are the
same): batched INSERTs on SQLite, COPY on PostgreSQL. Each run's epoch aggregates (what
`record_epoch` keeps on the run: epochs done, best and final values) are then stored by
`storage.listings.store_epoch_aggregates`, the function a bulk import calls.

Per-layer norms (`layer_stats`, 6 rows per epoch) are written for the newest
`--layer-stats-runs` runs only (default 10,000: 3 million rows). Every run's would be 30 million
rows at 100,000 runs, several GB on each backend and most of the build time, and nothing reads
them but the one run on screen (through the run's index), so they change no page's cost.

    python benchmarks/scale_db.py [--home DIR] [--database-url URL] [--runs 10000] [--epochs 50]
                                  [--layer-stats-runs 10000]

An existing database with the same runs, epochs and layer-stat rows is reused as it is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_HOME = Path(tempfile.gettempdir()) / "ablation-scale"
LAYERS = ("conv_1", "conv_2", "conv_3", "conv_4", "dense_1", "output")
DATASETS = ("cifar10", "fashion_mnist", "mnist", "cifar100")
EPOCH_COLUMNS = ("run_id", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds",
                 "recorded_at")
LAYER_COLUMNS = ("run_id", "epoch", "layer", "grad_norm", "weight_norm")
CHUNK = 2000  # runs per write transaction


@dataclass(frozen=True)
class Contents:
    """What a database holds, as the build counts it."""

    runs: int
    completed: int
    epoch_rows: int
    layer_rows: int
    max_epoch: int

    def text(self) -> str:
        return (f"{self.runs:,} runs ({self.completed:,} completed), {self.epoch_rows:,} epoch "
                f"rows, {self.layer_rows:,} layer-stat rows")


def wanted_contents(n_runs: int, epochs: int = 50, layer_stats_runs: int = 10_000) -> Contents:
    """What `build` makes for these arguments."""
    stats_runs = min(layer_stats_runs, n_runs)
    return Contents(n_runs, n_runs, n_runs * epochs, stats_runs * epochs * len(LAYERS), epochs)


def database_url(home: Path, url: str | None = None) -> str:
    """`url`, else the SQLite file the project itself would use in `home`."""
    return url or f"sqlite:///{home / 'ablation.db'}"


def contents(url: str) -> Contents | None:
    """Counts of what the database at `url` holds; None when it has no runs table (or cannot be
    opened). Read with a plain engine: nothing is created or migrated."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if "runs" not in inspect(conn).get_table_names():
                return None
            one = lambda sql: int(conn.execute(text(sql)).scalar() or 0)  # noqa: E731
            return Contents(one("SELECT count(*) FROM runs"),
                            one("SELECT count(*) FROM runs WHERE status = 'completed'"),
                            one("SELECT count(*) FROM epoch_metrics"),
                            one("SELECT count(*) FROM layer_stats"),
                            one("SELECT max(epoch) FROM epoch_metrics"))
    except Exception:  # noqa: BLE001 - a file that is not a database, a server without it
        return None
    finally:
        engine.dispose()


def size_bytes(url: str) -> int:
    """The database's size on disk: the SQLite file (with its WAL), or PostgreSQL's
    pg_database_size."""
    from sqlalchemy import create_engine, make_url, text

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return sum(Path(f"{parsed.database}{s}").stat().st_size for s in ("", "-wal")
                   if Path(f"{parsed.database}{s}").exists())
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())
    finally:
        engine.dispose()


def build(home: Path, n_runs: int = 10_000, epochs: int = 50, layer_stats_runs: int = 10_000,
          seed: int = 0, quiet: bool = False, url: str | None = None) -> Path | str:
    """Make the database (`url`, default `home`/ablation.db) with `n_runs` completed runs of
    `epochs` epochs each, the newest `layer_stats_runs` with per-layer norms; reused when it
    already holds exactly that. Returns the SQLite file's path, or the URL."""
    home.mkdir(parents=True, exist_ok=True)
    url = database_url(home, url)
    sqlite = url.startswith("sqlite")
    os.environ["ABLATION_HOME"] = str(home)
    if sqlite:
        os.environ.pop("ABLATION_DATABASE_URL", None)
    else:
        os.environ["ABLATION_DATABASE_URL"] = url
    result: Path | str = Path(url.removeprefix("sqlite:///")) if sqlite else url
    stats_runs = min(layer_stats_runs, n_runs)
    wanted = wanted_contents(n_runs, epochs, layer_stats_runs)
    found = contents(url)
    if found == wanted:
        from cnn_ablation.storage.engine import get_engine

        get_engine(url)  # brought to the current schema (migrated) like any process would
        if not quiet:
            print(f"  reusing {shown(url)}: {found.text()}, "
                  f"{size_bytes(url) / 1e6:,.0f} MB", flush=True)
        return result
    _empty(url)

    from cnn_ablation.storage.engine import get_engine
    from cnn_ablation.storage.listings import store_epoch_aggregates

    started = time.perf_counter()
    engine = get_engine(url)
    _queue_runs(engine, n_runs, epochs, seed)
    if not quiet:
        print(f"  {n_runs:,} runs queued in {time.perf_counter() - started:.0f} s", flush=True)
    _finish_runs(engine, epochs, n_runs - stats_runs, started, quiet)
    aggregates_at = time.perf_counter()
    store_epoch_aggregates(engine)
    if not quiet:
        print(f"  epoch aggregates stored on the runs in "
              f"{time.perf_counter() - aggregates_at:.0f} s", flush=True)
    if sqlite:  # no ANALYZE: a SQLite database has none unless someone runs it
        with engine.connect() as conn:  # outside a transaction: straight to the driver
            conn.connection.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        # What autovacuum does to a PostgreSQL table soon after a load this size (statistics,
        # the visibility map): a real database that has run for a minute has it.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    made = contents(url)
    if not quiet:
        print(f"  database ready: {shown(url)}: {made.text() if made else '?'}; "
              f"{size_bytes(url) / 1e6:,.0f} MB; built in {time.perf_counter() - started:.0f} s",
              flush=True)
    return result


def shown(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def _empty(url: str) -> None:
    """No database at `url` any more: the SQLite files removed, or every table dropped."""
    from sqlalchemy import MetaData, create_engine, make_url

    from cnn_ablation.storage.engine import get_engine

    get_engine.cache_clear()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm", ".migrate-lock"):
            Path(f"{parsed.database}{suffix}").unlink(missing_ok=True)
        return
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        meta.drop_all(engine)
    finally:
        engine.dispose()


def _queue_runs(engine: Any, n_runs: int, epochs: int, seed: int) -> None:
    """The studies, then single runs up to `n_runs`, through the project's own functions."""
    from cnn_ablation.config import RunConfig
    from cnn_ablation.jobs.launch import new_run
    from cnn_ablation.storage.runs import create_runs
    from cnn_ablation.studies import grid
    from cnn_ablation.studies.presets import study_preset
    from cnn_ablation.studies.spec import StudySpec

    rng = random.Random(seed)
    base = RunConfig(dataset="cifar10", epochs=epochs)
    # The largest study: every BatchNorm switch on/off x 3 dropout levels (96 cells) x 5 seeds.
    big = StudySpec(base, {**{f"bn_conv_{i}": (True, False) for i in range(1, 5)},
                           "bn_dense_1": (True, False), "dropout": (0.0, 0.25, 0.5)},
                    "full", 5)
    specs = [("BN x dropout, full factorial", big),
             ("the chapter's experiment", study_preset("chapter", base, 10)),
             ("BN one layer at a time", study_preset("bn_one_at_a_time", base.with_changes(
                 dataset="fashion_mnist"), 5)),
             ("dropout sweep", study_preset("dropout_sweep", base.with_changes(dataset="mnist"), 5))]
    made = 0
    for name, spec in specs:
        made += len(grid.create(engine, spec, name)[1])
    batch = []
    seed_no = 1000
    while made + len(batch) < n_runs:
        bn = tuple(rng.random() < 0.7 for _ in range(5))
        config = RunConfig(dataset=rng.choice(DATASETS), bn=bn,
                           dropout=rng.choice((0.0, 0.25, 0.5)), epochs=epochs,
                           learning_rate=rng.choice((0.0005, 0.001)), seed=seed_no)
        seed_no += 1
        batch.append(new_run(config, name=rng.choice(("", "", "sweep", "baseline", "night"))))
        if len(batch) == CHUNK:
            create_runs(engine, batch)
            made += len(batch)
            batch = []
    if batch:
        create_runs(engine, batch)


def _finish_runs(engine: Any, epochs: int, first_with_stats: int, started: float,
                 quiet: bool) -> None:
    """Every run completed as a worker leaves it, with its epochs (and, past the first
    `first_with_stats` runs, its per-layer norms), CHUNK runs per transaction."""
    from sqlalchemy import select, update

    from cnn_ablation.storage.engine import session_scope
    from cnn_ablation.storage.models import EpochMetricRow, LayerStatRow, RunRow

    for table, columns in ((EpochMetricRow, EPOCH_COLUMNS), (LayerStatRow, LAYER_COLUMNS)):
        have = {c.name for c in table.__table__.columns} - {"id"}
        assert have == set(columns), f"{table.__tablename__} has {sorted(have)}: update the build"
    with session_scope(engine, write=False) as session:
        rows = session.execute(select(RunRow.id, RunRow.seed, RunRow.dataset)
                               .order_by(RunRow.id)).all()
    host = socket.gethostname()  # the Studies page estimates from runs on this host
    reports: dict[tuple[int, int], str] = {}
    for chunk_start in range(0, len(rows), CHUNK):
        chunk = rows[chunk_start:chunk_start + CHUNK]
        epoch_rows: list[tuple] = []
        stat_rows: list[tuple] = []
        finished = []
        for position, (run_id, run_seed, dataset) in enumerate(chunk, start=chunk_start):
            finished.append(_one_run(run_id, run_seed, dataset, epochs, host, reports,
                                     epoch_rows, stat_rows if position >= first_with_stats
                                     else None))
        with session_scope(engine) as session:
            conn = session.connection()
            _bulk_insert(conn, "epoch_metrics", EPOCH_COLUMNS, epoch_rows)
            _bulk_insert(conn, "layer_stats", LAYER_COLUMNS, stat_rows)
            session.execute(update(RunRow), finished)  # bulk UPDATE by primary key
        done = chunk_start + len(chunk)
        if not quiet and (done // CHUNK) % 10 == 0:
            print(f"  {done:,} runs finished, {time.perf_counter() - started:.0f} s", flush=True)


def _one_run(run_id: int, run_seed: int, dataset: str, epochs: int, host: str,
             reports: dict[tuple[int, int], str], epoch_rows: list[tuple],
             stat_rows: list[tuple] | None) -> dict[str, Any]:
    """A run's epochs (and norms) appended to the lists; its finished values returned."""
    r = random.Random(run_seed * 7919 + run_id)
    ceiling = r.uniform(0.6, 0.93)
    speed = r.uniform(0.08, 0.25)
    start = 1.7e9 + run_id * 900.0
    at = start
    val = 0.0
    for epoch in range(1, epochs + 1):
        acc = ceiling * (1 - math.exp(-speed * epoch)) + r.gauss(0, 0.004)
        val = acc - r.uniform(0.0, 0.04) + r.gauss(0, 0.006)
        seconds = r.uniform(14.0, 18.0)
        at += seconds
        epoch_rows.append((run_id, epoch, 2.3 * (1 - acc) + 0.05, acc, 2.3 * (1 - val) + 0.1,
                           val, seconds, at))
        if stat_rows is not None:
            stat_rows.extend((run_id, epoch, layer, r.uniform(0.01, 2.0), r.uniform(1.0, 30.0))
                             for layer in LAYERS)
    test = val - r.uniform(0.0, 0.02)
    classes = 100 if dataset == "cifar100" else 10
    per_class = 1000 if classes == 10 else 100
    right = int(per_class * test)
    if (classes, right) not in reports:  # the same matrix for every run with this many right
        confusion = [[0] * classes for _ in range(classes)]
        for i in range(classes):
            confusion[i][i] = right
            confusion[i][(i + 1) % classes] = per_class - right
        reports[classes, right] = json.dumps(
            {"class_names": [f"class_{i}" for i in range(classes)], "confusion": confusion})
    return dict(
        id=run_id, status="completed", started_at=start, finished_at=at + 20.0,
        heartbeat_at=at, progress_at=at, worker_id="bench-worker", host=host,
        device="cpu", phase=None, progress_epoch=epochs, progress_batch=1407,
        progress_batches=1407, test_accuracy=test, test_loss=2.3 * (1 - test) + 0.1,
        environment_json=json.dumps({"tensorflow": "2.21.0", "host": host}),
        test_report_json=reports[classes, right])


def _bulk_insert(conn: Any, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Rows into `table` in the connection's transaction: COPY on PostgreSQL, one executemany
    of a prepared INSERT on SQLite."""
    if not rows:
        return
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    conn.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL database that exists (postgresql+psycopg://...; "
                             "its tables are replaced); default: the SQLite file ablation.db "
                             "in --home")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--layer-stats-runs", type=int, default=10_000,
                        help="the newest N runs get per-layer norms (6 rows per epoch)")
    args = parser.parse_args()
    build(args.home, args.runs, args.epochs, layer_stats_runs=args.layer_stats_runs,
          url=args.database_url)


if __name__ == "__main__":
    main()
