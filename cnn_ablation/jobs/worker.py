"""The worker: a long-lived process that claims queued runs and trains each one in a fresh child
process (its own interpreter: TensorFlow is not fork-safe), one child per slot (one per GPU, or
one CPU slot). It keeps heartbeats, enforces cancel, fails runs whose process was lost or hung,
and on SIGTERM stops claiming and lets each child finish its epoch, save a checkpoint and go back
to the queue (the next worker resumes it). Also here: how anyone else decides that a run's
worker is gone (`reap_lost_runs`). This module never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from cnn_ablation.jobs import exit_codes, liveness
from cnn_ablation.jobs.slots import (
    DEFAULT_BACKEND,
    Child,
    Launched,
    LocalProcess,
    Slot,
    child_env,
)
from cnn_ablation.log import rotate_own_log
from cnn_ablation.settings import settings
from cnn_ablation.storage import clock, lifecycle, runs, workers
from cnn_ablation.storage.engine import is_disk_full, retry_when_locked
from cnn_ablation.storage.records import Run, RunLost
from cnn_ablation.storage.status import CancelMode, RunStatus

POLL_S = 0.5  # how often a free slot looks for queued runs
CANNOT_WRITE_PAUSE_S = 60.0  # no claims for this long after a child found the database read-only
log = logging.getLogger(__name__)

# Called after each run ends, with the engine; returns the ids of runs it queued. The studies
# register theirs (`studies.rounds.advance`: an adaptive study's next round) through the command
# that starts the worker, so this lower floor never imports the studies above it.
RunEndedHook = Callable[[Engine], list[int]]


class Worker:
    """Claims queued runs into its slots and watches the child process of each until it ends.

    The worker is the one that knows whether its children live: it fails a child that exited
    without finishing its run, and kills and fails one that stopped making progress (no progress
    beat from inside its training loop for `ABLATION_NO_PROGRESS_SECONDS`). Database errors are
    logged and retried with backoff; a full disk pauses claiming until a write succeeds again.
    """

    def __init__(self, engine: Engine, slots: list[Slot], once: bool = False,
                 worker_id: str | None = None, on_run_ended: RunEndedHook | None = None,
                 backend: str = DEFAULT_BACKEND):
        config = settings()
        self.backend = backend  # Keras' backend for every run it trains (stored on each)
        self.engine, self.slots, self.once = engine, slots, once
        self.on_run_ended = on_run_ended
        self.url = engine.url.render_as_string(hide_password=False)
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.host = socket.gethostname()
        self.interval = config.heartbeat_s
        self.cancel_grace_s = config.cancel_grace_s
        self.no_progress_s = config.no_progress_s
        self.stopping = threading.Event()
        self.force = threading.Event()
        self.logs = config.logs
        self.backoff_s = 0.0  # > 0 while the database refuses our writes
        self.disk_full = False
        self.claims_paused_until = 0.0  # set when a child found the database read-only

    # --- signals --------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stopping.is_set():
            self.force.set()  # a second Ctrl-C / SIGTERM: stop the children now
        self.stopping.set()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.logs.mkdir(parents=True, exist_ok=True)
        slots = ",".join(s.device for s in self.slots)
        retry_when_locked(lambda: workers.register_worker(self.engine, self.id, self.host,
                                                          os.getpid(), slots), "register worker")
        with contextlib.suppress(SQLAlchemyError):  # rows of workers gone for over a week
            workers.prune_workers(self.engine, 7 * 24 * 3600)
        log.info("worker %s started; slots: %s", self.id, slots.replace(",", ", "))
        self._next_beat = 0.0
        try:
            while not self._step():
                # While running, a signal ends the wait at once; while stopping, poll children.
                if self.stopping.is_set():
                    time.sleep(0.2)
                else:
                    self.stopping.wait(max(POLL_S, self.backoff_s))
        finally:
            try:
                workers.stop_worker(self.engine, self.id)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("could not sign off (%s); others will see this worker go stale", exc)
            log.info("worker %s stopped", self.id)

    def _step(self) -> bool:
        """One pass of the loop; True when the worker is done. A database error ends the pass
        (logged, retried after a backoff) but never the worker."""
        try:
            if time.time() >= self._next_beat:
                self._beat()
            self._watch_children()
            if self.stopping.is_set():
                return self._stop_children()
            paused = self.disk_full or time.time() < self.claims_paused_until
            claimed = False if paused else self._fill_slots()
            self.backoff_s = 0.0
            return self.once and not claimed and not self._busy()
        except (SQLAlchemyError, OSError) as exc:
            self.backoff_s = min(max(2 * self.backoff_s, 1.0), 30.0)
            full = is_disk_full(exc)
            if full and not self.disk_full:
                log.error("disk full: not claiming runs until a write succeeds (%s)", exc)
            self.disk_full = self.disk_full or full
            log.warning("database error (%s: %s); retrying in %.0f s", type(exc).__name__,
                        str(exc).splitlines()[0], self.backoff_s)
            return False

    def _beat(self) -> None:
        workers.heartbeat_worker(self.engine, self.id)
        rotate_own_log(self.logs)
        if self.disk_full:
            log.info("writes succeed again: claiming runs")
            self.disk_full = False
        # The worker vouches for each child it owns while the child lives; whether the child
        # makes progress is checked separately (_watch_children), from its own progress beats.
        for _, child in self._busy():
            if child.process.poll() is None:
                with contextlib.suppress(RunLost):
                    lifecycle.beat(self.engine, child.run_id, self.id)
        for run_id in liveness.reap_lost_runs(self.engine):
            log.warning("run %s: its worker is gone; marked failed (worker lost)", run_id)
        self._next_beat = time.time() + self.interval

    def _busy(self) -> list[tuple[Slot, Child]]:
        return [(s, s.child) for s in self.slots if s.child is not None]

    def _fill_slots(self) -> bool:
        claimed = False
        for slot in self.slots:
            if slot.child is not None:
                continue
            run = lifecycle.claim(self.engine, self.id, self.host, slot.device, self.interval,
                                  backend=self.backend)
            if run is None:
                break
            self._start_child(slot, run)
            claimed = True
        return claimed

    def _start_child(self, slot: Slot, run: Run) -> None:
        env = child_env(slot, self.url, self.interval, backend=self.backend)
        # One log per run, named so that it can never be another run's (a resumed run appends).
        log_path = run.log_path or str(self.logs / f"run-{run.id}-{uuid.uuid4().hex[:8]}.log")
        try:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)  # removed meanwhile
            process = self.launch(run, slot, env, log_path)
        except OSError as exc:  # no log file, no process (EMFILE, EAGAIN, ENOSPC, ...)
            # The run is claimed and no process will ever beat for it: fail it now, saying
            # why, rather than leave it `running` for as long as this worker lives.
            reason = (f"the training process could not be started on {self.host}: "
                      f"{type(exc).__name__}: {exc}")
            log.error("run %s: %s", run.id, reason)
            lifecycle.finish(self.engine, run.id, RunStatus.FAILED, worker_id=self.id,
                             error=reason)
            if is_disk_full(exc):
                self.disk_full = True
            return
        slot.child = Child(process, run.id, log_path)
        lifecycle.attach_process(self.engine, run.id, self.id, process.pid or 0, log_path)
        log.info("run %s: started on %s with %s (pid %s)", run.id, slot.device, self.backend,
                 process.pid)

    def launch(self, run: Run, slot: Slot, env: dict[str, str], log_path: str) -> Launched:
        """Where a run's process lives: here, a local process. (Executors override this; the
        claim, heartbeat, cancel and finish logic above and below is the same for all.)"""
        return LocalProcess(self.child_command(run.id), env, log_path)

    def child_command(self, run_id: int) -> list[str]:
        """The process that trains a run: a fresh interpreter (TensorFlow is not fork-safe)."""
        return [sys.executable, "-m", "cnn_ablation", "execute", str(run_id),
                "--parent-pid", str(os.getpid())]

    def _watch_children(self) -> None:
        for slot, child in self._busy():
            code = child.process.poll()
            run = runs.find_run(self.engine, child.run_id)
            if code is None:
                self._enforce_cancel(child, run)
                self._check_progress(child, run)
                continue
            requeue = getattr(child.process, "requeue_reason", None)
            if run is not None and run.status == RunStatus.RUNNING and run.worker_id == self.id:
                if requeue:  # stopped before its process started: back in line, as it was
                    lifecycle.requeue(self.engine, child.run_id, self.id, run.checkpoint_path,
                                      run.resume_epoch or 0, f"{requeue}: back in the queue")
                else:
                    status, reason = self._why_ended(child, code)
                    lifecycle.finish(self.engine, child.run_id, status, worker_id=self.id,
                                     error=reason)
            final = runs.find_run(self.engine, child.run_id)
            log.info("run %s: %s", child.run_id, final.status if final else "deleted")
            slot.child = None
            self._run_ended()

    def _run_ended(self) -> None:
        """The run-ended hook (adaptive studies queue their next round or record why they stop);
        called here, right after a run ends, so `--once` picks the next round up too."""
        if self.on_run_ended is None:
            return
        queued = self.on_run_ended(self.engine)
        if queued:
            log.info("after a run ended: queued runs %s", ", ".join(map(str, queued)))

    def _why_ended(self, child: Child, code: int) -> tuple[RunStatus, str]:
        """The status and reason for a child that exited while its run was still running."""
        if child.hung_for is not None:
            return RunStatus.FAILED, (
                f"no progress for {child.hung_for:.0f} s (limit {self.no_progress_s:g} s, "
                "ABLATION_NO_PROGRESS_SECONDS): the training process hung and was killed; "
                "finished epochs are kept")
        if child.killed_for_cancel or self.force.is_set():
            reason = "worker stopped" if self.force.is_set() else "cancelled by user"
            return RunStatus.CANCELLED, f"{reason} (training process killed)"
        if child.process.lost_reason:
            return RunStatus.FAILED, f"worker lost: {child.process.lost_reason}; epochs are kept"
        if code == exit_codes.DISK_FULL:
            return RunStatus.FAILED, ("disk full: the training process could not write "
                                      f"(see {child.log_path}); finished epochs are kept")
        if code == exit_codes.CANNOT_WRITE:
            self.claims_paused_until = time.time() + CANNOT_WRITE_PAUSE_S
            log.error("training processes cannot write to the database: not claiming runs for "
                      "%.0f s", CANNOT_WRITE_PAUSE_S)
            return RunStatus.FAILED, (
                "the database is read-only for the training process (its user may not write "
                f"it); this worker claims no runs for {CANNOT_WRITE_PAUSE_S:.0f} s; see "
                f"{child.log_path}")
        how = (f"killed by signal {signal.Signals(-code).name}" if code < 0
               else f"exited with code {code}")
        return RunStatus.FAILED, f"worker lost: training process {how}; see {child.log_path}"

    def _enforce_cancel(self, child: Child, run: Run | None) -> None:
        """Stop-now cancels that the child did not honour within the grace period: kill it.
        (Stop-after-epoch waits for the epoch; the progress check covers a child that hangs.)"""
        if run is None or not run.cancel_requested or run.cancel_mode != CancelMode.NOW:
            return
        now = time.time()
        child.cancel_seen_at = child.cancel_seen_at or now
        if now - child.cancel_seen_at > self.cancel_grace_s and not child.killed_for_cancel:
            log.warning("run %s: did not stop within %g s; killing it", child.run_id,
                        self.cancel_grace_s)
            child.killed_for_cancel = True
            child.process.kill()

    def _check_progress(self, child: Child, run: Run | None) -> None:
        if run is None or run.progress_at is None or child.hung_for is not None:
            return
        silent = clock.now(self.engine) - run.progress_at  # both on the database's clock
        if silent > self.no_progress_s:
            log.error("run %s: no progress for %.0f s (limit %g s); killing pid %s",
                      child.run_id, silent, self.no_progress_s, child.process.pid or "-")
            child.hung_for = silent
            child.process.kill()

    def _stop_children(self) -> bool:
        """Ask children to stop after their epoch (force: kill them). True when none is left."""
        for _, child in self._busy():
            if self.force.is_set():
                child.process.kill()
            elif child.cancel_seen_at is None:
                child.cancel_seen_at = time.time()  # marks "SIGTERM sent"
                child.process.stop_after_epoch()
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
