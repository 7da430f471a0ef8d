"""The Ray executor: the same worker (claim, heartbeats, cancel, finish, "worker lost"), but each
run's training process is started by a Ray task, on whichever node of the cluster has room.

`python -m cnn_ablation worker --executor ray [--ray-address auto|HOST:PORT]` claims runs from the
database as the local worker does and submits one task per run, asking Ray for a share of a GPU
(`num_gpus=1/K` with `--runs-per-gpu K`) when the cluster has GPUs, else one CPU. The task runs
the very command the local worker runs (`python -m cnn_ablation execute RUN --parent-pid PID`)
as a child process on its node, with CUDA_VISIBLE_DEVICES as Ray assigned it, appends the
child's output to the run's log on that node, and returns the child's exit code. The database
stays the one record: the child writes epochs and beats there exactly as under the local worker.

Stopping: `kill()` is `ray.cancel(force=True)` (Ray ends the task's process and the children it
started). `stop_after_epoch()` is `ray.cancel(force=False)`, which raises KeyboardInterrupt in
the task; the task passes it on to the child as SIGTERM and waits, so the child finishes its
epoch, saves a checkpoint and goes back to the queue. A task whose Ray worker process or node
died reports a `lost_reason`, and the worker fails the run "worker lost: Ray task lost (...)"
with its epochs kept, as it does for a local process.

Ray is imported only here and only when a Ray worker starts: the local worker and the dashboard
never import it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from cnn_ablation.jobs.slots import Launched, Slot, child_env, gpu_memory_mb, memory_share
from cnn_ablation.jobs.worker import RunEndedHook, Worker
from cnn_ablation.settings import NAMES
from cnn_ablation.storage.records import Run

log = logging.getLogger(__name__)
MAX_SLOTS = 1024
POLL_CHILD_S = 0.2  # how often a task looks at its child (and so how soon a cancel is seen)
LOST = 1  # the exit code reported for a task that Ray lost (its reason says why)


class RayUnavailable(RuntimeError):
    """Ray is not installed, or its cluster cannot be reached (the message says which)."""


def connect(address: str | None) -> Any:
    """Import Ray and connect this process to a cluster: `HOST:PORT` (a head's address), `auto`
    (the cluster `ray start` runs on this machine), or None (that one if there is one, else a Ray
    instance of this worker's own, without Ray's dashboard)."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("--executor ray needs the ray package (pip install -c "
                             f"constraints.txt 'cnn-ablation[ray]'): {exc}") from exc
    if not ray.is_initialized():
        _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False if address is None else None,
                     logging_level=logging.WARNING, log_to_driver=False)
        except Exception as exc:  # ConnectionError, ValueError, RuntimeError, ... from Ray
            where = address or "a new local Ray instance"
            raise RayUnavailable(f"--ray-address: cannot connect to Ray at {where} "
                                 f"({type(exc).__name__}: {first_line(exc)})") from exc
    return ray


def _check_reachable(address: str | None) -> None:
    """A HOST:PORT where nothing listens is refused at once (Ray itself retries for minutes)."""
    if address is None or address == "auto":
        return
    host, port = split_address(address)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise RayUnavailable(f"--ray-address: cannot connect to Ray at {address} (nothing "
                             f"answers there: {type(exc).__name__}: {exc}); is its head "
                             "started (`ray start --head`)?") from exc


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT as (host, port); ValueError naming --ray-address otherwise."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--ray-address: {address!r} is not allowed; allowed: auto | HOST:PORT "
                         "(the head's address, as `ray start --head` prints it)")
    return host, int(port)


def wait_for_resources(ray: Any, poll_s: float = 2.0) -> dict[str, float]:
    """The cluster's resources, once it has a CPU or GPU to run on: a head started with none
    (`--num-cpus=0 --num-gpus=0`, as in docker-compose.ray.yml) waits for its first node, so
    the GPU nodes decide whether runs ask for GPUs even when they join after the worker."""
    cluster = dict(ray.cluster_resources())
    if not cluster.get("CPU") and not cluster.get("GPU"):
        log.info("the Ray cluster has no CPU or GPU yet; waiting for a node to join")
        while not cluster.get("CPU") and not cluster.get("GPU"):
            time.sleep(poll_s)
            cluster = dict(ray.cluster_resources())
    return cluster


def task_resources(cluster: dict[str, float], runs_per_gpu: int, gpus: str = "all") -> dict[str, float]:
    """What one run asks Ray for: 1/K of a GPU when the cluster has GPUs (and `gpus` is not
    "none"), else one CPU. GPUs are the scarce resource, so a GPU run asks for no CPU: K runs per
    GPU fit on a node even when it has fewer CPUs than K × GPUs."""
    if gpus != "none" and cluster.get("GPU", 0) >= 1:
        return {"num_gpus": 1.0 / runs_per_gpu, "num_cpus": 0}
    return {"num_cpus": 1}


def default_slots(cluster: dict[str, float], resources: dict[str, float]) -> int:
    """How many runs fit in the cluster at once: its GPUs × K, or its CPUs."""
    if resources.get("num_gpus"):
        return max(1, round(int(cluster.get("GPU", 0)) / resources["num_gpus"]))
    return max(1, int(cluster.get("CPU", 1)))


def ray_slots(count: int, resources: dict[str, float]) -> list[Slot]:
    """`count` slots; each only caps how many runs are in flight (Ray chooses node and GPU, the
    task reports where it landed)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SLOTS:
        raise ValueError(f"--slots: {count!r} is not allowed; allowed: a whole number "
                         f"1..{MAX_SLOTS}")
    share = resources.get("num_gpus")
    what = f"{share:.3g} GPU" if share else "1 CPU"
    return [Slot(f"ray ({what}) slot {i}/{count}", "-1") for i in range(1, count + 1)]


def check_options(gpus: str, runs_per_gpu: int, gpu_memory: int | None,
                  slots: int | None, address: str | None = None) -> None:
    """Refuse bad worker flags (ValueError naming the flag) before anything is connected."""
    if address is not None and address != "auto":
        split_address(address)
    if gpus not in ("all", "none"):
        raise ValueError(f"--gpus: {gpus!r} is not allowed with --executor ray; allowed: "
                         "all | none (Ray chooses the GPUs)")
    if isinstance(runs_per_gpu, bool) or not isinstance(runs_per_gpu, int) \
            or not 1 <= runs_per_gpu <= 16:
        raise ValueError(f"--runs-per-gpu: {runs_per_gpu!r} is not allowed; allowed: a whole "
                         "number 1..16")
    if gpu_memory is not None and not 64 <= gpu_memory <= 10**7:
        raise ValueError(f"--gpu-memory-mb: {gpu_memory!r} is not allowed; allowed: 64 or more")
    if slots is not None:
        ray_slots(slots, {})


class RayTask:
    """A run's training process inside a Ray task, as the worker sees it (`Launched`)."""

    def __init__(self, ray: Any, ref: Any):
        self.ray, self.ref = ray, ref
        self.pid: int | None = None  # on another node: the run row gets the child's pid itself
        self.lost_reason: str | None = None
        self.requeue_reason: str | None = None  # stopped before the task started
        self.code: int | None = None
        self.killed = False
        self.stopping = False

    def poll(self) -> int | None:
        if self.code is not None:
            return self.code
        exceptions = self.ray.exceptions
        try:
            ready, _ = self.ray.wait([self.ref], timeout=0)
            if not ready:
                return None
            self.code = int(self.ray.get(self.ref))
        except exceptions.TaskCancelledError as exc:
            self.code = -signal.SIGKILL
            if self.stopping and not self.killed:
                # ray.cancel(force=False) ends a task still waiting for a node at once: its run
                # never started, so it goes back to the queue (a started task gets SIGTERM and
                # requeues itself with a checkpoint)
                self.requeue_reason = "the worker stopped before its Ray task started"
            elif not self.killed:  # cancelled by someone else
                self.lost_reason = f"Ray task lost ({type(exc).__name__}: {first_line(exc)})"
        except exceptions.RayError as exc:  # RayTaskError, WorkerCrashedError, NodeDiedError, ...
            self.code = LOST
            self.lost_reason = f"Ray task lost ({type(exc).__name__}: {first_line(exc)})"
        return self.code

    def kill(self) -> None:
        self.killed = True
        self._cancel(force=True)

    def stop_after_epoch(self) -> None:
        self.stopping = True
        self._cancel(force=False)

    def _cancel(self, force: bool) -> None:
        try:
            self.ray.cancel(self.ref, force=force)
        except Exception as exc:  # already finished, or Ray unreachable: poll() will tell
            log.warning("ray.cancel(force=%s) failed: %s", force, first_line(exc))


class RayWorker(Worker):
    """A worker whose runs are Ray tasks: `launch` is the only difference from `Worker`."""

    def __init__(self, engine: Engine, address: str | None = None, runs_per_gpu: int = 1,
                 gpu_memory: int | None = None, slots: int | None = None, gpus: str = "all",
                 once: bool = False, worker_id: str | None = None,
                 on_run_ended: RunEndedHook | None = None, backend: str = "tensorflow"):
        check_options(gpus, runs_per_gpu, gpu_memory, slots, address)
        self.ray = connect(address)
        cluster = wait_for_resources(self.ray)
        self.resources = task_resources(cluster, runs_per_gpu, gpus)
        self.runs_per_gpu, self.gpu_memory = runs_per_gpu, gpu_memory
        count = slots if slots is not None else default_slots(cluster, self.resources)
        super().__init__(engine, ray_slots(count, self.resources), once=once,
                         worker_id=worker_id, on_run_ended=on_run_ended, backend=backend)
        self.remote = self.ray.remote(max_retries=0, retry_exceptions=False,
                                      **self.resources)(train_in_task)
        log.info("Ray cluster: %s; each run asks for %s", _resources_text(cluster),
                 _resources_text(self.resources))

    def run(self) -> None:
        try:
            super().run()
        finally:
            with contextlib.suppress(Exception):
                self.ray.shutdown()

    def launch(self, run: Run, slot: Slot, env: dict[str, str], log_path: str) -> Launched:
        ref = self.remote.remote(
            run.id, self.id, passed_env(env), log_path, os.getcwd(),
            self.runs_per_gpu if self.resources.get("num_gpus") else 1, self.gpu_memory)
        return RayTask(self.ray, ref)


SECRET_NAMES = ("ABLATION_PASSWORD",)  # never sent to a node


def passed_env(env: dict[str, str]) -> dict[str, str]:
    """The part of a run's environment (`slots.child_env`) that travels to the task's node: our
    settings and TensorFlow/Keras/Python switches. The node keeps its own PATH, HOME and so on;
    CUDA_VISIBLE_DEVICES is what Ray assigns there. Task arguments are visible to anyone who can
    see the cluster's tasks, so no secret travels: not the dashboard's password, and the
    database URL without its password (the node's own ABLATION_DATABASE_URL is used where it
    has one, see `node_env`)."""
    keep = ("ABLATION_", "TF_", "KERAS_", "XLA_", "PYTHONUNBUFFERED", "OMP_NUM_THREADS")
    out = {k: v for k, v in env.items()
           if (k in NAMES or k.startswith(keep)) and k != "CUDA_VISIBLE_DEVICES"
           and k not in SECRET_NAMES}
    if "ABLATION_DATABASE_URL" in out:
        out["ABLATION_DATABASE_URL"] = without_password(out["ABLATION_DATABASE_URL"])
    return out


def without_password(url: str) -> str:
    """The URL with its password taken out (as SQLAlchemy parses it); unchanged if it has none."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return url if parsed.password is None else parsed._replace(password=None).render_as_string(
        hide_password=False)


def node_env(node: dict[str, str], sent: dict[str, str]) -> dict[str, str]:
    """The training process's environment on a node: the node's own, our settings over it, but
    the node's database URL where it has one (it carries the password; the one sent has none)."""
    out = {**node, **sent}
    if node.get("ABLATION_DATABASE_URL"):
        out["ABLATION_DATABASE_URL"] = node["ABLATION_DATABASE_URL"]
    return out


def train_in_task(run_id: int, worker_id: str, env: dict[str, str], log_path: str, cwd: str,
                  runs_per_gpu: int, gpu_memory: int | None) -> int:
    """The body of a run's Ray task, on the node Ray chose: start the training process, wait for
    it, return its exit code. KeyboardInterrupt (`ray.cancel(force=False)`) is passed on as
    SIGTERM (stop after this epoch) and the task keeps waiting for the child to end."""
    main = threading.current_thread() is threading.main_thread()
    # A cancel arrives as a simulated SIGINT; a Ray started from a background shell ignores
    # SIGINT, and would then drop it. Take it as KeyboardInterrupt while this task runs.
    old = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    try:
        import ray

        slot = task_slot([str(g) for g in ray.get_gpu_ids()], runs_per_gpu, gpu_memory)
        node = dict(os.environ)
        if "OMP_NUM_THREADS" not in env:  # Ray sets it to 1 for tasks; a local run has no limit
            node.pop("OMP_NUM_THREADS", None)
        base = node_env(node, env)
        run_env = child_env(slot, None, None, base=base)  # the local worker's, for this node
        _record_placement(run_env, run_id, worker_id, socket.gethostname(), slot.device)
        cmd = [sys.executable, "-m", "cnn_ablation", "execute", str(run_id),
               "--parent-pid", str(os.getpid())]
        with open(_writable(log_path), "ab") as out:
            child = subprocess.Popen(cmd, env=run_env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     cwd=cwd if os.path.isdir(cwd) else None)
        try:
            while True:
                try:
                    while child.poll() is None:
                        time.sleep(POLL_CHILD_S)
                    return child.returncode
                except KeyboardInterrupt:  # stop after this epoch: the child checkpoints
                    child.send_signal(signal.SIGTERM)
        finally:
            if child.poll() is None:  # only if this task itself failed
                child.kill()
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


def task_slot(gpu_ids: list[str], runs_per_gpu: int, gpu_memory: int | None,
              totals: dict[str, int] | None = None) -> Slot:
    """The slot a task got on its node, from the GPUs Ray assigned it (none: the CPU): its
    device label, CUDA_VISIBLE_DEVICES, and its memory share as the local worker computes it
    (`slots.memory_share`; the GPU's total from nvidia-smi on this node unless `totals`)."""
    if not gpu_ids:
        return Slot("cpu (ray)", "-1")
    if totals is None:
        totals = gpu_memory_mb()
    total = totals.get(gpu_ids[0])
    share = f" 1/{runs_per_gpu}" if runs_per_gpu > 1 else ""
    return Slot(f"gpu:{','.join(gpu_ids)}{share} (ray)", ",".join(gpu_ids),
                memory_share(total, runs_per_gpu, gpu_memory), memory_total_mb=total)


def _writable(log_path: str) -> str:
    """The run's log on this node; a temp folder if its folder cannot be made here."""
    try:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        return log_path
    except OSError:
        folder = Path(tempfile.gettempdir()) / "cnn-ablation-logs"
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / Path(log_path).name)


def _record_placement(env: dict[str, str], run_id: int, worker_id: str, host: str,
                      device: str) -> None:
    """Put the node and GPU that Ray chose on the run (its host and device columns, which the
    Runs page shows). A database that cannot be written now does not stop the run: it trains
    either way, its child's own writes will tell, and its environment names the host too."""
    from cnn_ablation.storage import lifecycle

    url = env.get("ABLATION_DATABASE_URL")
    if not url:
        return
    try:
        from cnn_ablation.storage.engine import get_engine

        if not lifecycle.record_placement(get_engine(url), run_id, worker_id, host, device):
            log.warning("run %s: not placed on %s %s: it is no longer running under %s",
                        run_id, host, device, worker_id)
    except Exception as exc:  # the database is busy or away: the child's own writes will tell
        log.warning("run %s: could not record placement %s on %s: %s", run_id, device, host,
                    first_line(exc))


def _resources_text(resources: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(resources.items())
                     if not k.startswith(("node:", "object_store", "memory", "accelerator_type")))


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""
