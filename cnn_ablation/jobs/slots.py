"""Where a run's training process lives and with what: the devices and slots a worker fills (K
runs may share one GPU, each with its share of memory), the environment of each training
process, and the `Launched` handle an executor returns (a local process here; a Ray task in
ray_executor.py). Never imports TensorFlow."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from cnn_ablation.settings import settings


class Launched(Protocol):
    """A run's training process as its executor started it (a local process, a Ray task)."""

    pid: int | None  # for the log, when there is one on this host
    lost_reason: str | None  # set when the executor knows why it vanished (node died, ...)

    def poll(self) -> int | None:
        """Its exit code once it has ended, else None."""

    def kill(self) -> None:
        """End it now."""

    def stop_after_epoch(self) -> None:
        """Ask it to finish its epoch, save a checkpoint and go back to the queue (SIGTERM)."""


class LocalProcess:
    """A training process on this host: `python -m cnn_ablation execute RUN` (the default)."""

    lost_reason: str | None = None

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: str):
        with open(log_path, "ab") as out:
            # A new session: Ctrl-C in the worker's terminal reaches the worker, which then
            # stops its children in order instead of having them killed mid-write.
            self.process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=os.getcwd())
        self.pid: int | None = self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def kill(self) -> None:
        self.process.kill()

    def stop_after_epoch(self) -> None:
        self.process.send_signal(signal.SIGTERM)


@dataclass
class Child:
    """The training process of one run, as its worker sees it."""

    process: Launched
    run_id: int
    log_path: str
    cancel_seen_at: float | None = None  # when a cancel (or SIGTERM) was first passed on
    killed_for_cancel: bool = False
    hung_for: float | None = None  # set when killed for making no progress


@dataclass
class Slot:
    device: str  # "cpu", "gpu:0", or "gpu:0 slot 2/4" when several runs share a GPU
    cuda_visible_devices: str  # what the child sees; "-1" hides every GPU
    memory_limit_mb: int | None = None  # the child's share of its GPU's memory
    child: Child | None = None
    memory_total_mb: int | None = None  # its GPU's whole memory, when known (JAX wants a fraction)


def detect_gpus() -> list[str]:
    """GPU indices without importing TensorFlow: CUDA_VISIBLE_DEVICES if set, else nvidia-smi."""
    visible = settings().visible_gpus
    if visible is not None:
        return list(visible)
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def gpu_memory_mb() -> dict[str, int]:
    """Total memory of each GPU by index (nvidia-smi); empty when it cannot be asked."""
    if not shutil.which("nvidia-smi"):
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    pairs = (line.split(",") for line in out.splitlines() if "," in line)
    return {index.strip(): int(float(total)) for index, total in pairs}


def make_slots(gpus: str = "all", runs_per_device: int = 1,
               gpu_memory: int | None = None) -> list[Slot]:
    """`all` -> every GPU found (none found: the CPU); `none` -> the CPU; `0,1` -> those GPUs.
    `runs_per_device` slots on each: a small network leaves most of a big GPU idle, so K runs
    can share it, each limited to `gpu_memory` MB (default: the GPU's memory / K)."""
    if gpus == "none":
        ids: list[str] = []
    elif gpus == "all":
        ids = detect_gpus()
    else:
        ids = [g.strip() for g in gpus.split(",")]
        if not ids or not all(g.isdigit() for g in ids):
            raise ValueError(f"--gpus: {gpus!r} is not allowed; allowed: all | none | 0,1,...")
        found = detect_gpus()
        missing = [g for g in ids if g not in found]
        if missing and all(f.isdigit() for f in found):  # (UUIDs in CUDA_VISIBLE_DEVICES: trust)
            here = ", ".join(found) if found else "none: no GPU found here, use --gpus none"
            raise ValueError(f"--gpus: {gpus!r} is not allowed; allowed: GPUs found here "
                             f"({here})")
    k = runs_per_device
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 16:
        raise ValueError(f"--runs-per-gpu: {k!r} is not allowed; allowed: a whole number 1..16")
    if gpu_memory is not None and not 64 <= gpu_memory <= 10**7:
        raise ValueError(f"--gpu-memory-mb: {gpu_memory!r} is not allowed; allowed: 64 or more")
    if not ids:
        return [Slot("cpu" if k == 1 else f"cpu slot {i}/{k}", "-1") for i in range(1, k + 1)]
    totals = gpu_memory_mb() if gpu_memory is not None or k > 1 else {}
    slots = []
    for g in ids:
        share = memory_share(totals.get(g), k, gpu_memory)
        for i in range(1, k + 1):
            label = f"gpu:{g}" if k == 1 else f"gpu:{g} slot {i}/{k}"
            slots.append(Slot(label, g, share, memory_total_mb=totals.get(g)))
    return slots


def memory_share(total_mb: int | None, runs_per_gpu: int, gpu_memory: int | None) -> int | None:
    """The memory limit of one of `runs_per_gpu` runs on a GPU of `total_mb`: `--gpu-memory-mb`
    if given, else the GPU's memory / K when K > 1 and it is known, else none (one run grows)."""
    if gpu_memory is not None:
        return gpu_memory
    if runs_per_gpu > 1 and total_mb:
        return total_mb // runs_per_gpu
    return None


BACKENDS = ("tensorflow", "jax", "torch")  # Keras 3's backends a worker may train on
DEFAULT_BACKEND = "tensorflow"


def worker_backend(given: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The Keras backend a worker's runs train on: `--backend`, else KERAS_BACKEND, else
    tensorflow. ValueError (naming the flag and what to install) when it is not one of BACKENDS
    or its library is not installed here (looked up, not imported)."""
    import importlib.util

    environ = os.environ if environ is None else environ
    name = (given or environ.get("KERAS_BACKEND", "") or DEFAULT_BACKEND).strip().lower()
    where = "KERAS_BACKEND" if not given and environ.get("KERAS_BACKEND") else "--backend"
    if name not in BACKENDS:
        raise ValueError(f"{where}: {name!r} is not allowed; allowed: {', '.join(BACKENDS)}")
    if importlib.util.find_spec(name) is None:
        extra = {"jax": "pip install 'cnn-ablation[jax]' (or jax[cuda12] for a GPU)",
                 "torch": "pip install torch (see pytorch.org for the build of your GPU)",
                 "tensorflow": "pip install cnn-ablation"}[name]
        raise ValueError(f"{where}: {name} is not installed in this Python ({sys.executable}); "
                         f"install it: {extra}")
    return name


def child_env(slot: Slot, url: str | None, interval: float | None,
              base: Mapping[str, str] | None = None,
              backend: str | None = None) -> dict[str, str]:
    """The environment of a slot's training process, from `base` (default: this process's):
    its GPU (or none), memory growth and its share of the GPU's memory for TensorFlow
    (ABLATION_GPU_MEMORY_MB, read by training.configure_gpus) and for Keras on JAX (no
    preallocation, XLA_PYTHON_CLIENT_MEM_FRACTION when the GPU's total is known), the database
    and heartbeat of its worker (None: as `base` has them), and KERAS_BACKEND (the worker's
    `--backend`; None: as `base` has it). Both executors use it: the local
    worker for its slots, a Ray task on its node for the GPU share Ray gave it."""
    env = dict(os.environ if base is None else base)
    env.update(CUDA_VISIBLE_DEVICES=slot.cuda_visible_devices, TF_FORCE_GPU_ALLOW_GROWTH="true",
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if url is not None:
        env["ABLATION_DATABASE_URL"] = url
    if interval is not None:
        env["ABLATION_HEARTBEAT_SECONDS"] = str(interval)
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX: grow, as TensorFlow does
    env.pop("ABLATION_GPU_MEMORY_MB", None)
    limit, total = slot.memory_limit_mb, slot.memory_total_mb
    if limit is not None:
        env["ABLATION_GPU_MEMORY_MB"] = str(limit)
        if total:
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{min(limit / total, 1.0):.4f}"
    return env
