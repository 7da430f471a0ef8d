"""Runs per hour with K runs sharing each device (`worker --runs-per-gpu K`), K = 1, 2, 4.

Each measurement queues N identical small runs into a fresh SQLite database in a temp folder,
drains the queue with a real `python -m cnn_ablation worker --once --gpus G --runs-per-gpu K`,
and takes runs/hour from the runs' own start and finish times as stored (first start to last
finish, so the worker's own start-up is not counted but each run's process start is). The K
values are measured interleaved (1, 2, 4, 1, 2, 4, ...) so that a change in the machine's load
hits them alike; it prints each measurement, then per K the median, the spread (min..max) and
the ratio of medians to K = 1.

On a CPU-only machine (`--gpus none`, or `all` with no GPU) the K runs share the CPU cores, so
K > 1 shows the contention; on a GPU host K runs share each GPU (memory growth, 1/K of its memory
each) and it shows what sharing gains there.

    python benchmarks/study_throughput.py [--runs 4] [--k 1,2,4] [--repeats 2]
        [--dataset synthetic:2000] [--epochs 2] [--batch-size 32] [--gpus all|none|0,1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(k: int, args: argparse.Namespace) -> dict:
    """One drained queue of `args.runs` runs with K slots per device; its runs/hour."""
    home = Path(tempfile.mkdtemp(prefix=f"throughput-k{k}-"))
    env = dict(os.environ, ABLATION_HOME=str(home), ABLATION_START_WORKER="0",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env.pop("ABLATION_DATABASE_URL", None)
    try:
        subprocess.run([sys.executable, "-m", "cnn_ablation", "submit", "--dataset", args.dataset,
                        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                        "--seeds", str(args.runs)], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        started = time.monotonic()
        with open(home / "worker.out", "w") as out:
            worker = subprocess.run([sys.executable, "-m", "cnn_ablation", "worker", "--once",
                                     "--gpus", args.gpus, "--runs-per-gpu", str(k)],
                                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    timeout=args.timeout)
        wall = time.monotonic() - started
        if worker.returncode != 0:
            raise SystemExit(f"worker exited {worker.returncode}: see {home / 'worker.out'}")
        return {"k": k, "wall_s": wall, **_from_database(home, args.runs)}
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


def _from_database(home: Path, n: int) -> dict:
    """runs/hour from the stored start and finish times (the database's clock)."""
    from cnn_ablation.storage.engine import get_engine
    from cnn_ablation.storage.listings import runs_frame

    engine = get_engine(f"sqlite:///{home / 'ablation.db'}")
    try:
        runs = runs_frame(engine)
    finally:
        engine.dispose()
    statuses = set(runs["status"])
    if statuses != {"completed"} or len(runs) != n:
        errors = "; ".join(str(e) for e in runs["error"].dropna().unique())
        raise SystemExit(f"expected {n} completed runs, got {sorted(statuses)}: {errors}")
    span = float(runs["finished_at"].max() - runs["started_at"].min())
    per_run = (runs["finished_at"] - runs["started_at"]).astype(float)
    return {"span_s": span, "runs_per_hour": n / span * 3600.0,
            "run_s_median": float(per_run.median()), "device": ", ".join(sorted(set(runs["device"])))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4, help="runs per measurement (N)")
    parser.add_argument("--k", default="1,2,4", help="slots per device to compare")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per K")
    parser.add_argument("--dataset", default="synthetic:2000")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--gpus", default="all", help="all (CPU when there is no GPU) | none | 0,1")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    parser.add_argument("--keep", action="store_true", help="keep each temp ABLATION_HOME")
    args = parser.parse_args()
    ks = [int(k) for k in args.k.split(",")]
    print(f"{args.runs} runs of {args.dataset}, {args.epochs} epochs, batch {args.batch_size}, "
          f"--gpus {args.gpus}; K = {ks}, {args.repeats} rounds, interleaved; "
          f"{os.cpu_count()} CPUs, load average {_load()}", flush=True)
    rows = []
    for round_ in range(1, args.repeats + 1):
        for k in ks:
            row = measure(k, args)
            rows.append(row)
            print(f"round {round_} K={k}: {row['runs_per_hour']:7.1f} runs/h  (span "
                  f"{row['span_s']:6.1f} s, a run {row['run_s_median']:5.1f} s, wall "
                  f"{row['wall_s']:6.1f} s, {row['device']}; load {_load()})", flush=True)
    base = statistics.median(r["runs_per_hour"] for r in rows if r["k"] == ks[0])
    print(f"\n{'K':>3} {'runs/h median':>14} {'spread (min..max)':>20} {'vs K=' + str(ks[0]):>8}"
          f" {'a run, median':>14}")
    for k in ks:
        rates = [r["runs_per_hour"] for r in rows if r["k"] == k]
        run_s = statistics.median(r["run_s_median"] for r in rows if r["k"] == k)
        median = statistics.median(rates)
        print(f"{k:>3} {median:>14.1f} {min(rates):>9.1f} ..{max(rates):>8.1f} "
              f"{median / base:>8.2f} {run_s:>12.1f} s")
    print(f"load average at the end: {_load()}")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
