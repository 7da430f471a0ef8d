"""The worker: a long-lived process that claims queued runs and trains each one in a fresh child
process (its own interpreter: TensorFlow is not fork-safe), one child per slot (one per GPU, or
one CPU slot). It keeps heartbeats, enforces cancel, fails runs whose process was lost, and on
SIGTERM stops claiming and lets running children finish their epoch (status cancelled,
"worker stopped"). This module never imports TensorFlow.
"""

from __future__ import annotations

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
from pathlib import Path

from sqlalchemy import Engine

from cnn_ablation.datasets import ablation_home
from storage import queries
from storage.engine import database_url

CANCEL_GRACE_S = float(os.environ.get("ABLATION_CANCEL_GRACE_SECONDS", "15"))
POLL_S = 0.5  # how often a free slot looks for queued runs


def heartbeat_interval() -> float:
    return float(os.environ.get("ABLATION_HEARTBEAT_SECONDS", "5"))


@dataclass
class Slot:
    device: str  # "gpu:0" ... or "cpu"
    cuda_visible_devices: str  # what the child sees; "-1" hides every GPU
    child: subprocess.Popen | None = None
    run_id: int | None = None
    cancel_seen_at: float | None = None
    killed_for_cancel: bool = False


def detect_gpus() -> list[str]:
    """GPU indices without importing TensorFlow: CUDA_VISIBLE_DEVICES if set, else nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
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
    def __init__(self, engine: Engine, slots: list[Slot], once: bool = False,
                 worker_id: str | None = None, url: str | None = None):
        self.engine, self.slots, self.once = engine, slots, once
        self.url = url or database_url()
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.host = socket.gethostname()
        self.interval = heartbeat_interval()
        self.stopping = threading.Event()
        self.force = threading.Event()
        self.logs = ablation_home() / "logs"

    # --- signals --------------------------------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        if self.stopping.is_set():
            self.force.set()  # a second Ctrl-C / SIGTERM: stop the children now
        self.stopping.set()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.logs.mkdir(parents=True, exist_ok=True)
        queries.register_worker(self.engine, self.id, self.host, os.getpid(),
                                ",".join(s.device for s in self.slots))
        self._log(f"worker {self.id} started; slots: {', '.join(s.device for s in self.slots)}")
        next_beat = 0.0
        try:
            while True:
                now = time.time()
                if now >= next_beat:
                    queries.heartbeat_worker(self.engine, self.id)
                    # A child beats for itself once TensorFlow is imported; until then (and
                    # whenever it is alive) its worker vouches for it.
                    for slot in self._busy():
                        if slot.child.poll() is None:
                            queries.heartbeat_run(self.engine, slot.run_id)
                    for run_id in queries.reap_stale_runs(self.engine):
                        self._log(f"run {run_id}: worker lost (stale heartbeat), marked failed")
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
            queries.stop_worker(self.engine, self.id)
            self._log(f"worker {self.id} stopped")

    def _busy(self) -> list[Slot]:
        return [s for s in self.slots if s.child is not None]

    def _fill_slots(self) -> bool:
        claimed = False
        for slot in self.slots:
            if slot.child is not None:
                continue
            run = queries.claim_next_run(self.engine, self.id, self.host, slot.device,
                                         self.interval)
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
        log = open(self.logs / f"run-{run_id}.log", "ab")
        cmd = [sys.executable, "-m", "cnn_ablation", "execute", str(run_id),
               "--parent-pid", str(os.getpid())]
        # A new session: Ctrl-C in the worker's terminal reaches the worker, which then stops its
        # children in order instead of having them killed mid-write.
        slot.child = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, cwd=os.getcwd())
        log.close()
        slot.run_id, slot.cancel_seen_at, slot.killed_for_cancel = run_id, None, False
        queries.mark_running(self.engine, run_id, pid=slot.child.pid)
        self._log(f"run {run_id}: started on {slot.device} (pid {slot.child.pid})")

    def _watch_children(self) -> None:
        for slot in self._busy():
            code = slot.child.poll()
            run = queries.find_run(self.engine, slot.run_id)
            if code is None:
                self._enforce_cancel(slot, run)
                continue
            if run is not None and run.status == "running":
                if slot.killed_for_cancel or self.force.is_set():
                    reason = "worker stopped" if self.force.is_set() else "cancelled by user"
                    queries.finish_run(self.engine, slot.run_id, "cancelled",
                                       error=f"{reason} (training process killed)")
                else:
                    how = (f"killed by signal {signal.Signals(-code).name}" if code < 0
                           else f"exited with code {code}")
                    queries.finish_run(self.engine, slot.run_id, "failed",
                                       error=f"worker lost: training process {how}; "
                                             f"see {self.logs / f'run-{slot.run_id}.log'}")
            final = queries.find_run(self.engine, slot.run_id)
            self._log(f"run {slot.run_id}: {final.status if final else 'deleted'}")
            slot.child, slot.run_id = None, None

    def _enforce_cancel(self, slot: Slot, run) -> None:
        if run is None or not run.cancel_requested:
            return
        now = time.time()
        slot.cancel_seen_at = slot.cancel_seen_at or now
        if now - slot.cancel_seen_at > CANCEL_GRACE_S and not slot.killed_for_cancel:
            self._log(f"run {slot.run_id}: did not stop within {CANCEL_GRACE_S:g} s; killing it")
            slot.killed_for_cancel = True
            slot.child.kill()

    def _stop_children(self) -> bool:
        """Ask children to stop after their epoch (force: kill them). True when none is left."""
        for slot in self._busy():
            if self.force.is_set():
                slot.child.kill()
            elif slot.cancel_seen_at is None:
                slot.cancel_seen_at = time.time()  # marks "SIGTERM sent"
                slot.child.send_signal(signal.SIGTERM)
        return not self._busy()

    def _log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def ensure_local_worker(engine: Engine, max_age: float | None = None) -> str | None:
    """Start one detached local worker unless a worker has a fresh heartbeat.

    Safe to call on every page load and from several processes: the check and the registration
    are one write transaction, so exactly one caller starts a worker. Returns its id, or None.
    Turned off by ABLATION_START_WORKER=0 (deployments that run workers themselves).
    """
    if os.environ.get("ABLATION_START_WORKER", "1") == "0":
        return None
    max_age = max_age or 3 * heartbeat_interval()
    worker_id = f"{socket.gethostname()}-local-{uuid.uuid4().hex[:8]}"
    if not queries.claim_worker_start(engine, worker_id, socket.gethostname(), max_age):
        return None
    logs = ablation_home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = open(Path(logs) / f"worker-{worker_id}.log", "ab")
    url = engine.url.render_as_string(hide_password=False)
    subprocess.Popen([sys.executable, "-m", "cnn_ablation", "worker", "--worker-id", worker_id],
                     env=dict(os.environ, ABLATION_DATABASE_URL=url, PYTHONUNBUFFERED="1"),
                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                     start_new_session=True, cwd=os.getcwd())
    log.close()
    return worker_id
