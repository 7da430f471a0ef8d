"""How anyone but a run's own worker decides that the worker is gone (DESIGN: liveness is judged
by the process that knows). The worker judges its own children (cnn_ablation/jobs/worker.py); pages,
the CLI and other workers judge only the worker: on this host, whether its process is alive;
elsewhere, its heartbeat, stale by more than twice its interval plus twice the database's busy
timeout, so a slow write (which may wait the whole busy timeout) never makes a live run look
lost. Reaping reads first and writes only when something is lost. Never imports TensorFlow."""

from __future__ import annotations

import socket

from sqlalchemy import Engine

from cnn_ablation.settings import settings
from cnn_ablation.storage import clock, lifecycle, workers
from cnn_ablation.storage.engine import BUSY_TIMEOUT_S
from cnn_ablation.storage.status import RunStatus


def process_alive(pid: int, started_before: float | None = None,
                  started_at: float | None = None) -> bool:
    """Whether process `pid` runs on this host (a zombie counts as gone). `started_at`: its start
    time as this host's psutil gave it when it registered (the same clock): a process with that
    pid that started at another time is a different one that reused the pid. `started_before`
    (older workers' rows, on the database's clock): a process that started later than that,
    give or take a second."""
    import psutil  # here: `show`, `runs` and the pages reap without it unless a run is running

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if started_at is not None:
            return abs(process.create_time() - started_at) < 0.5
        return started_before is None or process.create_time() <= started_before + 1.0
    except psutil.Error:
        return False


def reap_lost_runs(engine: Engine, now: float | None = None) -> list[int]:
    """Fail running runs whose worker is gone ("worker lost"); their epochs stay.

    Only the owner judges its own children; everyone else (pages, CLI, other workers) judges the
    owner: on this host by whether its process lives, elsewhere by its heartbeat, stale by more
    than twice its interval plus twice the database's busy timeout, so a slow write (which can
    wait the whole busy timeout) never makes a live worker look dead.
    """
    now = now or clock.now(engine)
    host = socket.gethostname()
    here = workers.this_host()
    reaped = []
    for run in workers.running_runs_with_owner(engine):
        reason = _why_lost(run, host, now, here)
        if reason and lifecycle.finish(engine, run.run_id, RunStatus.FAILED,
                                       worker_id=run.worker_id, error=f"worker lost: {reason}; "
                                       "finished epochs are kept"):
            reaped.append(run.run_id)
    return reaped


def lost_after_s(interval: float) -> float:
    """How long an owner may be silent before others call it gone."""
    return 2 * interval + 2 * BUSY_TIMEOUT_S


def _why_lost(run: workers.RunningRun, host: str, now: float, here: str = "") -> str | None:
    limit = lost_after_s(run.heartbeat_interval or settings().heartbeat_s)
    if run.owner_heartbeat_at is None:  # no worker row (an older run): its own heartbeat
        silent = now - (run.heartbeat_at or now)
        return f"no heartbeat for {silent:.0f} s (limit {limit:.0f} s)" if silent > limit else None
    if run.owner_stopped_at is not None:
        return f"worker {run.worker_id} stopped while the run was running"
    # On this host (by its identity where the worker stated one, else by hostname), a worker is
    # judged by whether its process lives; elsewhere by its heartbeat.
    same_host = run.owner_host_id == here if run.owner_host_id else run.owner_host == host
    if same_host and run.owner_pid is not None:
        if run.owner_host_id and run.owner_process_started_at is not None:
            alive = process_alive(run.owner_pid, started_at=run.owner_process_started_at)
        else:
            alive = process_alive(run.owner_pid, run.owner_started_at)
        if not alive:
            return f"worker {run.worker_id} (pid {run.owner_pid} on {host}) is gone"
        return None  # alive here: only it judges its children
    silent = now - run.owner_heartbeat_at
    if silent > limit:
        return f"no heartbeat from worker {run.worker_id} for {silent:.0f} s (limit {limit:.0f} s)"
    return None
