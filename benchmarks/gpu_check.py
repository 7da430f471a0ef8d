"""The product's own worker on a GPU: the chapter study (all BatchNorm on vs BatchNorm on conv_1
only: 2 cells x 3 seeds x 10 epochs, CIFAR-shaped synthetic data, 50,000 training images) queued
on a fresh SQLite database with `cnn-ablation study create`, then trained by the product's worker,
`python -m cnn_ablation worker --once --backend jax --gpus all --runs-per-gpu K`, for each K.

For each K it prints the wall time (worker start to its exit, every run finished), images/s per
run (training images x epochs over the run's own epoch seconds, median and range over the runs)
and in total (every run's images over the wall time), and GPU utilisation and memory sampled from
`nvidia-smi` every 0.5 s while the worker ran (n/a where there is none). Goal (issue 23): the
chapter study in <= 120 s on one H200. K values run largest first and stop when --budget-s is
spent, saying which were left out, so one call of the device tool (~8 minutes) always ends.

On a GPU machine with JAX but no TensorFlow and no internet: `make gpu-wheels` here fetches the
few wheels it lacks (keras, SQLAlchemy, alembic and their small dependencies) into .whl/; there:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site python3 benchmarks/gpu_check.py

On the CPU (what tests/test_gpu_check.py runs, small):

    python benchmarks/gpu_check.py --gpus none --ks 2,1 --images 200 --epochs 1 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(home: Path, *args: str, timeout: float = 300, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    """`python -m cnn_ablation ARGS` over `home` (its own SQLite file, no dashboard worker)."""
    environ = {k: v for k, v in os.environ.items() if k != "ABLATION_DATABASE_URL"}
    environ.update(ABLATION_HOME=str(home), ABLATION_START_WORKER="0", PYTHONUNBUFFERED="1",
                   **(env or {}))
    return subprocess.run([sys.executable, "-m", "cnn_ablation", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=timeout)


class GpuSampler(threading.Thread):
    """nvidia-smi's utilisation (%) and memory used (MiB), summed over GPUs, every `every` s."""

    def __init__(self, every: float = 0.5):
        super().__init__(daemon=True)
        self.every, self.samples = every, []
        self.stop = threading.Event()
        self.available = shutil.which("nvidia-smi") is not None

    def run(self) -> None:
        while self.available and not self.stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True,
                                     text=True, timeout=10).stdout
                rows = [[float(x) for x in line.split(",")] for line in out.strip().splitlines()]
                if rows:
                    self.samples.append((statistics.mean(r[0] for r in rows),
                                         sum(r[1] for r in rows)))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self.stop.wait(self.every)

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_max": None, "gpu_mem_max_mib": None}
        utils = [u for u, _ in self.samples]
        return {"gpu_util_mean": statistics.mean(utils), "gpu_util_max": max(utils),
                "gpu_mem_max_mib": max(m for _, m in self.samples)}


def measure(k: int, args: argparse.Namespace, base: Path) -> dict:
    """Queue the study on a fresh database, train it with one worker at K runs per GPU."""
    home = base / f"k{k}"
    created = cli(home, "study", "create", "--study-preset", "chapter", "--dataset",
                  f"synthetic:{args.images}", "--epochs", str(args.epochs), "--seeds",
                  str(args.seeds), "--val-split", "0", "--name", f"gpu check K={k}")
    if created.returncode != 0:
        raise SystemExit(f"study create failed:\n{created.stdout}{created.stderr}")
    sampler = GpuSampler()
    sampler.start()
    start = time.monotonic()
    worker = cli(home, "worker", "--once", "--backend", args.backend, "--gpus", args.gpus,
                 "--runs-per-gpu", str(k), timeout=args.budget_s + 600)
    wall = time.monotonic() - start
    sampler.stop.set()
    sampler.join(timeout=15)
    if worker.returncode != 0:
        raise SystemExit(f"worker failed (exit {worker.returncode}):\n{worker.stderr[-4000:]}")
    runs = json.loads(cli(home, "runs", "--json").stdout)
    rates, images, failed = [], 0, []
    for run in runs:
        if run["status"] != "completed":
            failed.append(f"run {run['id']}: {run['status']} ({run.get('error')})")
            continue
        shown = json.loads(cli(home, "show", str(run["id"]), "--json").stdout)
        used = (shown.get("environment") or {}).get("dataset", {}).get("used_images")
        used = used or args.images
        seconds = sum(e["seconds"] or 0 for e in shown["epoch_metrics"])
        epochs = len(shown["epoch_metrics"])
        images += used * epochs
        if seconds > 0:
            rates.append(used * epochs / seconds)
    if failed:
        raise SystemExit("runs did not complete:\n" + "\n".join(failed))
    backends = sorted({r.get("backend") or "tensorflow" for r in runs})
    devices = sorted({r.get("device") or "" for r in runs})
    return {"k": k, "runs": len(runs), "wall_s": wall, "images": images,
            "per_run_median": statistics.median(rates) if rates else None,
            "per_run_min": min(rates, default=None), "per_run_max": max(rates, default=None),
            "total_images_per_s": images / wall if wall > 0 else None,
            "backends": backends, "devices": devices, **sampler.summary()}


def fmt(value, pattern: str = "{:.0f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", default="4,2,1", help="runs per GPU to try, in order")
    parser.add_argument("--gpus", default="all", help="the worker's --gpus (none: the CPU)")
    parser.add_argument("--backend", default="jax", choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--images", type=int, default=50_000, help="training images per run")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (2 cells)")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="start no further K once this much time has passed")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    print(f"chapter study: 2 cells x {args.seeds} seeds x {args.epochs} epochs on "
          f"synthetic:{args.images} (32x32x3), worker --backend {args.backend} --gpus "
          f"{args.gpus}; K = {ks}", flush=True)
    if shutil.which("nvidia-smi"):
        print(subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True)
              .stdout.strip(), flush=True)
    began, rows, skipped = time.monotonic(), [], []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as base:
        for k in ks:
            if rows and time.monotonic() - began > args.budget_s:
                skipped.append(k)
                continue
            row = measure(k, args, Path(base))
            rows.append(row)
            print(f"K={k}: {row['runs']} runs in {row['wall_s']:.1f} s, "
                  f"{fmt(row['total_images_per_s'])} images/s in all", flush=True)
    print(f"\n{'K':>3} {'wall s':>8} {'images/s per run (median, range)':>34} "
          f"{'images/s in all':>16} {'GPU util mean/max %':>20} {'GPU mem max MiB':>16}")
    for r in rows:
        per_run = (f"{fmt(r['per_run_median'])} ({fmt(r['per_run_min'])}.."
                   f"{fmt(r['per_run_max'])})")
        util = f"{fmt(r['gpu_util_mean'])}/{fmt(r['gpu_util_max'])}"
        print(f"{r['k']:>3} {r['wall_s']:>8.1f} {per_run:>34} "
              f"{fmt(r['total_images_per_s']):>16} {util:>20} {fmt(r['gpu_mem_max_mib']):>16}")
    best = min(rows, key=lambda r: r["wall_s"])
    print(f"\nfastest: K={best['k']}, {best['wall_s']:.1f} s for the study (goal <= 120 s); "
          f"backends {', '.join(best['backends'])}; devices {', '.join(best['devices'])}")
    if skipped:
        print(f"not run (the {args.budget_s:.0f} s budget was spent): K = {skipped}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "skipped": skipped,
                                              "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
