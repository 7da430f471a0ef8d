"""What K runs sharing one GPU gain: total training images/s of the chapter's network with K
processes on one device at once, K = 1, 2, 4 (what `worker --runs-per-gpu K` does).

Each process builds the chapter's network with our own builder (`cnn_ablation.networks.model.build_model`,
all BatchNorms on, dropout 0.5), compiles it as a run does (Adam 5e-4, sparse cross-entropy,
accuracy), and fits random CIFAR-shaped uint8 images (batch 32) for a few epochs, capped at its
share of the GPU's memory (1/K). Every process compiles and warms up first, then all start
together; the total rate is all images over the time from the first start to the last end. The K
values are measured interleaved (1, 2, 4, 1, 2, 4, ...). Where `nvidia-smi` exists, GPU
utilisation and memory are sampled during each measurement.

Needs only Keras 3 and one backend (no database, no TensorFlow unless it is the backend):

    KERAS_BACKEND=jax python benchmarks/gpu_sharing.py [--k 1,2,4] [--repeats 2] [--images 20000]
        [--epochs 3] [--batch-size 32] [--out results.json]

Backends: tensorflow (our training path: per-process memory limit as the worker sets it), jax
(XLA_PYTHON_CLIENT_MEM_FRACTION), torch (torch.cuda.set_per_process_memory_fraction).
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
MEMORY_SHARE = 0.9  # of the GPU's memory, split between the K processes


# --- one training process ----------------------------------------------------------------------
def child(args: argparse.Namespace) -> None:
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    fraction = MEMORY_SHARE / args.k
    if backend == "jax":  # before jax starts: no preallocation, at most this share
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{fraction:.3f}"
    sys.path.insert(0, str(ROOT))
    import numpy as np

    device = _limit_memory(backend, fraction)
    import keras

    from cnn_ablation.config import RunConfig
    from cnn_ablation.networks.model import build_model

    config = RunConfig(dataset="synthetic")  # the chapter's network: BN everywhere, dropout 0.5
    keras.utils.set_random_seed(args.index)
    model = build_model(config, (32, 32, 3), 10)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(args.index)
    n = args.images - args.images % args.batch_size  # whole batches: one compiled step shape
    x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    warm = min(n, 20 * args.batch_size)
    model.fit(x[:warm], y[:warm], batch_size=args.batch_size, epochs=1, verbose=0)  # compile
    Path(args.sync, f"ready-{args.index}").touch()
    while not Path(args.sync, "go").exists():
        time.sleep(0.01)
    start = time.time()
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=0)
    end = time.time()
    print(json.dumps({"index": args.index, "images": n * args.epochs, "start": start,
                      "end": end, "backend": backend, "keras": keras.__version__,
                      "device": device, "params": model.count_params()}), flush=True)


def _limit_memory(backend: str, fraction: float) -> str:
    """Cap this process at `fraction` of GPU 0's memory; returns what it trains on."""
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(fraction, 0)
            return torch.cuda.get_device_name(0)
        return "cpu"
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        return getattr(gpus[0], "device_kind", str(gpus[0])) if gpus else "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:  # as training.configure_gpus does for a worker sharing a GPU
        total = _gpu_memory_mb()
        if total:
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=int(total * fraction))])
        else:
            tf.config.experimental.set_memory_growth(gpu, True)
    return gpus[0].name if gpus else "cpu"


def _gpu_memory_mb() -> int | None:
    sample = _nvidia_smi("memory.total")
    return int(sample[0]) if sample else None


# --- the measurement ----------------------------------------------------------------------------
def _nvidia_smi(fields: str) -> list[float] | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits",
                              "-i", "0"], capture_output=True, text=True, timeout=10, check=True)
        return [float(v) for v in out.stdout.strip().split(",")]
    except (subprocess.SubprocessError, OSError, ValueError):
        return None


class GpuSampler(threading.Thread):
    """utilization.gpu and memory.used of GPU 0, twice a second, while a measurement runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[list[float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            sample = _nvidia_smi("utilization.gpu,memory.used")
            if sample:
                self.samples.append(sample)

    def summary(self) -> dict:
        if not self.samples:
            return {}
        return {"gpu_util_mean_pct": statistics.mean(s[0] for s in self.samples),
                "gpu_memory_max_mb": max(s[1] for s in self.samples)}


def measure(k: int, args: argparse.Namespace) -> dict:
    sync = tempfile.mkdtemp(prefix=f"gpu-sharing-k{k}-")
    cmd = [sys.executable, __file__, "--child", "--k", str(k), "--sync", sync,
           "--images", str(args.images), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen([*cmd, "--index", str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(k)]
    try:
        deadline = time.monotonic() + args.timeout
        while len(list(Path(sync).glob("ready-*"))) < k:
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                err = failed[0].stderr.read()[-3000:] if failed else "timed out"
                raise SystemExit(f"K={k}: a process did not get ready: {err}")
            time.sleep(0.05)
        sampler = GpuSampler()
        sampler.start()
        Path(sync, "go").touch()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if p.returncode != 0:
                raise SystemExit(f"K={k}: a process failed:\n{err[-3000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        sampler.done.set()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(sync, ignore_errors=True)
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    images = sum(r["images"] for r in results)
    return {"k": k, "images_per_s": images / span, "span_s": span,
            "per_process_images_per_s": [r["images"] / (r["end"] - r["start"]) for r in results],
            "backend": results[0]["backend"], "keras": results[0]["keras"],
            "device": results[0]["device"], "params": results[0]["params"],
            **sampler.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=20000, help="per process and epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    parser.add_argument("--out", default=None, help="also write every measurement as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sync", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.k = int(args.k)
        return child(args)
    ks = [int(k) for k in args.k.split(",")]
    print(f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')}, K = {ks}, "
          f"{args.repeats} rounds interleaved, {args.images} images x {args.epochs} epochs per "
          f"process, batch {args.batch_size}; load average {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for round_ in range(1, args.repeats + 1):
        for k in ks:
            row = measure(k, args)
            rows.append(row)
            util = (f", GPU busy {row['gpu_util_mean_pct']:.0f} %, up to "
                    f"{row['gpu_memory_max_mb']:.0f} MB" if "gpu_util_mean_pct" in row else "")
            each = ", ".join(f"{v:.0f}" for v in row["per_process_images_per_s"])
            print(f"round {round_} K={k}: {row['images_per_s']:8.0f} images/s in all "
                  f"(each: {each}){util}; {row['device']}", flush=True)
    base = statistics.median(r["images_per_s"] for r in rows if r["k"] == ks[0])
    print(f"\n{'K':>3} {'images/s median':>16} {'spread':>18} {'vs K=' + str(ks[0]):>8} "
          f"{'GPU busy':>9}")
    summary = []
    for k in ks:
        mine = [r for r in rows if r["k"] == k]
        rates = [r["images_per_s"] for r in mine]
        util = [r["gpu_util_mean_pct"] for r in mine if "gpu_util_mean_pct" in r]
        median = statistics.median(rates)
        busy = f"{statistics.median(util):.0f} %" if util else "-"
        print(f"{k:>3} {median:>16.0f} {min(rates):>8.0f}..{max(rates):<8.0f} "
              f"{median / base:>8.2f} {busy:>9}")
        summary.append({"k": k, "median_images_per_s": median, "ratio": median / base})
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
