"""The worker: a long-lived process that claims queued runs and trains each one in a fresh child
process (its own interpreter: TensorFlow is not fork-safe), one child per slot (one per GPU, or
one CPU slot). It keeps heartbeats, enforces cancel, fails runs whose process was lost, and on
SIGTERM stops claiming and lets running children finish their epoch (status cancelled,
"worker stopped"). This module never imports TensorFlow.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import Engine

from cnn_ablation.settings import settings
from storage import lifecycle, runs, workers
from storage.records import Run
from storage.status import RunStatus

POLL_S = 0.5  # how often a free slot looks for queued runs
log = logging.getLogger(__name__)


@dataclass
class Child:
    """The training process of one run, as its worker sees it."""

    process: subprocess.Popen[bytes]
    run_id: int
    cancel_seen_at: float | None = None  # when a cancel (or SIGTERM) was first passed on
    killed_for_cancel: bool = False


@dataclass
class Slot:
    device: str  # "gpu:0" ... or "cpu"
    cuda_visible_devices: str  # what the child sees; "-1" hides every GPU
    child: Child | None = None


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


def make_slots(gpus: str = "all") -> list[Slot]:
    """`all` -> one slot per GPU found (none found: one CPU slot); `none` -> CPU; `0,1` -> those."""
    if gpus == "none":
        ids: list[str] = []
    elif gpus == "all":
        ids = detect_gpus()
    else:
        ids = [g.strip() for g in gpus.split(",")]
        if not ids or not all(g.isdigit() for g in ids):
            raise ValueError(f"--gpus: {gpus!r} is not allowed; allowed: all | none | 0,1,...")
    if not ids:
        return [Slot("cpu", "-1")]
    return [Slot(f"gpu:{g}", g) for g in ids]


class Worker:
    """Claims queued runs into its slots and watches the child process of each until it ends."""

    def __init__(self, engine: Engine, slots: list[Slot], once: bool = False,
                 worker_id: str | None = None):
        config = settings()
        self.engine, self.slots, self.once = engine, slots, once
        self.url = engine.url.render_as_string(hide_password=False)
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.host = socket.gethostname()
        self.interval = config.heartbeat_s
        self.cancel_grace_s = config.cancel_grace_s
        self.stopping = threading.Event()
        self.force = threading.Event()
        self.logs = config.logs

    # --- signals --------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stopping.is_set():
            self.force.set()  # a second Ctrl-C / SIGTERM: stop the children now
        self.stopping.set()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.logs.mkdir(parents=True, exist_ok=True)
        workers.register_worker(self.engine, self.id, self.host, os.getpid(),
                                ",".join(s.device for s in self.slots))
        log.info("worker %s started; slots: %s", self.id, ", ".join(s.device for s in self.slots))
        next_beat = 0.0
        try:
            while True:
                now = time.time()
                if now >= next_beat:
                    workers.heartbeat_worker(self.engine, self.id)
                    # A child beats for itself once TensorFlow is imported; until then (and
                    # whenever it is alive) its worker vouches for it.
                    for _, child in self._busy():
                        if child.process.poll() is None:
                            lifecycle.beat(self.engine, child.run_id)
                    for run_id in lifecycle.reap_stale(self.engine):
                        log.warning("run %s: worker lost (stale heartbeat), marked failed", run_id)
                    next_beat = now + self.interval
                self._watch_children()
                if self.stopping.is_set():
                    if self._stop_children():
                        break
                else:
                    claimed = self._fill_slots()
                    if self.once and not claimed and not self._busy():
                        break
                # While running, a signal ends the wait at once; while stopping, poll the children.
                if self.stopping.is_set():
                    time.sleep(0.2)
                else:
                    self.stopping.wait(POLL_S)
        finally:
            workers.stop_worker(self.engine, self.id)
            log.info("worker %s stopped", self.id)

    def _busy(self) -> list[tuple[Slot, Child]]:
        return [(s, s.child) for s in self.slots if s.child is not None]

    def _fill_slots(self) -> bool:
        claimed = False
        for slot in self.slots:
            if slot.child is not None:
                continue
            run = lifecycle.claim(self.engine, self.id, self.host, slot.device, self.interval)
            if run is None:
                break
            self._start_child(slot, run.id)
            claimed = True
        return claimed

    def _start_child(self, slot: Slot, run_id: int) -> None:
        env = dict(os.environ, ABLATION_DATABASE_URL=self.url,
                   CUDA_VISIBLE_DEVICES=slot.cuda_visible_devices,
                   TF_FORCE_GPU_ALLOW_GROWTH="true", TF_CPP_MIN_LOG_LEVEL="2",
                   ABLATION_HEARTBEAT_SECONDS=str(self.interval), PYTHONUNBUFFERED="1")
        out = open(self.logs / f"run-{run_id}.log", "ab")
        cmd = [sys.executable, "-m", "cnn_ablation", "execute", str(run_id),
               "--parent-pid", str(os.getpid())]
        # A new session: Ctrl-C in the worker's terminal reaches the worker, which then stops its
        # children in order instead of having them killed mid-write.
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=os.getcwd())
        out.close()
        slot.child = Child(process, run_id)
        lifecycle.attach_process(self.engine, run_id, process.pid)
        log.info("run %s: started on %s (pid %s)", run_id, slot.device, process.pid)

    def _watch_children(self) -> None:
        for slot, child in self._busy():
            code = child.process.poll()
            run = runs.find_run(self.engine, child.run_id)
            if code is None:
                self._enforce_cancel(child, run)
                continue
            if run is not None and run.status == RunStatus.RUNNING:
                if child.killed_for_cancel or self.force.is_set():
                    reason = "worker stopped" if self.force.is_set() else "cancelled by user"
                    lifecycle.finish(self.engine, child.run_id, RunStatus.CANCELLED,
                                     error=f"{reason} (training process killed)")
                else:
                    how = (f"killed by signal {signal.Signals(-code).name}" if code < 0
                           else f"exited with code {code}")
                    lifecycle.finish(self.engine, child.run_id, RunStatus.FAILED,
                                     error=f"worker lost: training process {how}; "
                                           f"see {self.logs / f'run-{child.run_id}.log'}")
            final = runs.find_run(self.engine, child.run_id)
            log.info("run %s: %s", child.run_id, final.status if final else "deleted")
            slot.child = None

    def _enforce_cancel(self, child: Child, run: Run | None) -> None:
        if run is None or not run.cancel_requested:
            return
        now = time.time()
        child.cancel_seen_at = child.cancel_seen_at or now
        if now - child.cancel_seen_at > self.cancel_grace_s and not child.killed_for_cancel:
            log.warning("run %s: did not stop within %g s; killing it", child.run_id,
                        self.cancel_grace_s)
            child.killed_for_cancel = True
            child.process.kill()

    def _stop_children(self) -> bool:
        """Ask children to stop after their epoch (force: kill them). True when none is left."""
        for _, child in self._busy():
            if self.force.is_set():
                child.process.kill()
            elif child.cancel_seen_at is None:
                child.cancel_seen_at = time.time()  # marks "SIGTERM sent"
                child.process.send_signal(signal.SIGTERM)
        return not self._busy()


def ensure_local_worker(engine: Engine, max_age: float | None = None) -> str | None:
    """Start one detached local worker unless a worker has a fresh heartbeat.

    Safe to call on every page load and from several processes: the check and the registration
    are one write transaction, so exactly one caller starts a worker. Returns its id, or None.
    Turned off by ABLATION_START_WORKER=0 (deployments that run workers themselves).
    """
    config = settings()
    if not config.start_worker:
        return None
    max_age = max_age or 3 * config.heartbeat_s
    worker_id = f"{socket.gethostname()}-local-{uuid.uuid4().hex[:8]}"
    if not workers.claim_worker_start(engine, worker_id, socket.gethostname(), max_age):
        return None
    config.logs.mkdir(parents=True, exist_ok=True)
    out = open(config.logs / f"worker-{worker_id}.log", "ab")
    url = engine.url.render_as_string(hide_password=False)
    subprocess.Popen([sys.executable, "-m", "cnn_ablation", "worker", "--worker-id", worker_id],
                     env=dict(os.environ, ABLATION_DATABASE_URL=url, PYTHONUNBUFFERED="1"),
                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                     start_new_session=True, cwd=os.getcwd())
    out.close()
    return worker_id
