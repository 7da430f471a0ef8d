"""A database the size of a busy lab's: 10,000 completed runs x 50 epochs (500,000 epoch rows),
made with the project's own functions and tables, for benchmarks/dashboard_scale.py and
benchmarks/dashboard_browser.py.

Studies are created with `cnn_ablation.studies.grid.create` (which validates every config and queues
its runs through `storage.runs.create_runs`), the other runs with `launch.new_run` +
`create_runs`; then every run is finished as a worker would leave it (status, times, device,
test metrics and confusion matrix), and its epochs and per-layer norms are written with batch
INSERTs into the real `epoch_metrics` and `layer_stats` tables (500,000 `record_epoch`
transactions would take an hour; the rows are the same).

    python benchmarks/scale_db.py [--home DIR] [--runs 10000] [--epochs 50]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import socket
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_HOME = Path(tempfile.gettempdir()) / "ablation-scale"
LAYERS = ("conv_1", "conv_2", "conv_3", "conv_4", "dense_1", "output")
DATASETS = ("cifar10", "fashion_mnist", "mnist", "cifar100")


def database_runs(home: Path) -> int:
    db = home / "ablation.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone()[0]
    except sqlite3.Error:
        return 0


def build(home: Path, n_runs: int = 10_000, epochs: int = 50, layer_stats: bool = True,
          seed: int = 0, quiet: bool = False) -> Path:
    """Make `home`/ablation.db with `n_runs` completed runs of `epochs` epochs each (reused when
    it already holds exactly that many)."""
    home.mkdir(parents=True, exist_ok=True)
    os.environ["ABLATION_HOME"] = str(home)
    os.environ.pop("ABLATION_DATABASE_URL", None)
    db = home / "ablation.db"
    if database_runs(home) == n_runs and _epochs_of(db) == epochs:
        return db
    for suffix in ("", "-wal", "-shm", ".migrate-lock"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)

    from sqlalchemy import insert, update

    from cnn_ablation.config import RunConfig
    from cnn_ablation.jobs.launch import new_run
    from cnn_ablation.storage.engine import get_engine, session_scope
    from cnn_ablation.storage.models import EpochMetricRow, LayerStatRow, RunRow
    from cnn_ablation.storage.runs import create_runs
    from cnn_ablation.studies import grid
    from cnn_ablation.studies.presets import study_preset
    from cnn_ablation.studies.spec import StudySpec

    started = time.perf_counter()
    engine = get_engine(f"sqlite:///{db}")
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
    for name, spec in specs:
        grid.create(engine, spec, name)
    made = database_runs_any(db)
    batch = []
    seed_no = 1000
    while made + len(batch) < n_runs:
        bn = tuple(rng.random() < 0.7 for _ in range(5))
        config = RunConfig(dataset=rng.choice(DATASETS), bn=bn,
                           dropout=rng.choice((0.0, 0.25, 0.5)), epochs=epochs,
                           learning_rate=rng.choice((0.0005, 0.001)), seed=seed_no)
        seed_no += 1
        batch.append(new_run(config, name=rng.choice(("", "", "sweep", "baseline", "night"))))
        if len(batch) == 1000:
            create_runs(engine, batch)
            made += len(batch)
            batch = []
    if batch:
        create_runs(engine, batch)
    if not quiet:
        print(f"  {n_runs} runs queued in {time.perf_counter() - started:.1f} s", flush=True)

    from sqlalchemy import select

    with session_scope(engine, write=False) as session:
        rows = session.execute(select(RunRow.id, RunRow.seed, RunRow.dataset)
                               .order_by(RunRow.id)).all()
    t0 = 1.7e9
    host = socket.gethostname()  # the Studies page estimates from runs on this host
    for chunk_start in range(0, len(rows), 500):
        chunk = rows[chunk_start:chunk_start + 500]
        epoch_rows, stat_rows, finished = [], [], []
        for run_id, run_seed, dataset in chunk:
            r = random.Random(run_seed * 7919 + run_id)
            ceiling = r.uniform(0.6, 0.93)
            speed = r.uniform(0.08, 0.25)
            start = t0 + run_id * 900.0
            at = start
            classes = 100 if dataset == "cifar100" else 10
            for epoch in range(1, epochs + 1):
                acc = ceiling * (1 - math.exp(-speed * epoch)) + r.gauss(0, 0.004)
                val = acc - r.uniform(0.0, 0.04) + r.gauss(0, 0.006)
                seconds = r.uniform(14.0, 18.0)
                at += seconds
                epoch_rows.append(dict(run_id=run_id, epoch=epoch, loss=2.3 * (1 - acc) + 0.05,
                                       accuracy=acc, val_loss=2.3 * (1 - val) + 0.1,
                                       val_accuracy=val, seconds=seconds, recorded_at=at))
                if layer_stats:
                    stat_rows.extend(dict(run_id=run_id, epoch=epoch, layer=layer,
                                          grad_norm=r.uniform(0.01, 2.0),
                                          weight_norm=r.uniform(1.0, 30.0)) for layer in LAYERS)
            test = val - r.uniform(0.0, 0.02)
            per_class = 1000 if classes == 10 else 100
            confusion = [[0] * classes for _ in range(classes)]
            for i in range(classes):
                right = int(per_class * test)
                confusion[i][i] = right
                confusion[i][(i + 1) % classes] = per_class - right
            finished.append(dict(
                id=run_id, status="completed", started_at=start, finished_at=at + 20.0,
                heartbeat_at=at, progress_at=at, worker_id="bench-worker", host=host,
                device="cpu", phase=None, progress_epoch=epochs, progress_batch=1407,
                progress_batches=1407, test_accuracy=test, test_loss=2.3 * (1 - test) + 0.1,
                environment_json=json.dumps({"tensorflow": "2.21.0", "host": host}),
                test_report_json=json.dumps({"class_names": [f"class_{i}" for i in range(classes)],
                                             "confusion": confusion})))
        with session_scope(engine) as session:
            session.execute(insert(EpochMetricRow), epoch_rows)
            if stat_rows:
                session.execute(insert(LayerStatRow), stat_rows)
            session.execute(update(RunRow), finished)  # bulk UPDATE by primary key
        if not quiet and (chunk_start // 500) % 4 == 3:
            print(f"  {chunk_start + len(chunk)} runs finished, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no ANALYZE: a real database has none
    if not quiet:
        print(f"  database ready: {db} ({db.stat().st_size / 1e6:.0f} MB, "
              f"{time.perf_counter() - started:.0f} s)", flush=True)
    return db


def database_runs_any(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def _epochs_of(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT max(epoch) FROM epoch_metrics").fetchone()
    return int(row[0] or 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--no-layer-stats", action="store_true")
    args = parser.parse_args()
    build(args.home, args.runs, args.epochs, layer_stats=not args.no_layer_stats)


if __name__ == "__main__":
    main()
