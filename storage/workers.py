"""Workers: registration, heartbeats, sign-off, "start exactly one local worker", and which
worker owns each running run (what reaping judges liveness by)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine, delete, func, select, text, update

from cnn_ablation.storage.clock import db_now
from cnn_ablation.storage.engine import session_scope
from cnn_ablation.storage.models import RunRow, WorkerRow
from cnn_ablation.storage.status import RunStatus

if TYPE_CHECKING:
    import pandas as pd

WORKER_COLUMNS = ["id", "host", "pid", "slots", "started_at", "heartbeat_at", "host_id",
                  "process_started_at"]


def this_host() -> str:
    """This host as a worker names it for others: the machine id (or the hostname where there
    is none), the boot id and the pid namespace. Two machines with one hostname, a machine after
    a reboot, two containers on one machine: each a different host, so none judges another's
    processes by pid."""
    parts = []
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id", "/proc/sys/kernel/random/boot_id"):
        try:
            parts.append(open(path).read().strip()[:40])
        except OSError:
            parts.append("")
    machine = parts[0] or parts[1] or socket.gethostname()
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return f"{machine}:{parts[2]}:{namespace}"[:200]


def process_started(pid: int) -> float | None:
    """When process `pid` started, on this host's clock (psutil); None if it is not here."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def register_worker(engine: Engine, worker_id: str, host: str, pid: int | None, slots: str) -> None:
    """Insert the worker, or (started by `claim_worker_start`) fill in its pid and slots. The
    worker registers itself (`pid` is this process), so its host identity and its start time
    on this host's clock are stored too: liveness compares them with this host's own view."""
    now = db_now()
    here = host == socket.gethostname()  # (a test may register a worker of another host)
    host_id = this_host() if here else None
    started = process_started(pid) if here and pid == os.getpid() else None
    with session_scope(engine) as session:
        row = session.get(WorkerRow, worker_id)
        if row is None:
            session.add(WorkerRow(id=worker_id, host=host, pid=pid, slots=slots, started_at=now,
                                  heartbeat_at=now, host_id=host_id, process_started_at=started))
        else:
            row.pid, row.slots, row.heartbeat_at, row.stopped_at = pid, slots, now, None
            row.host_id, row.process_started_at = host_id, started


def claim_worker_start(engine: Engine, worker_id: str, host: str, max_age: float) -> bool:
    """In one write transaction: if no worker beat within `max_age` s, register `worker_id` as
    starting and return True. Callers racing here start exactly one worker between them."""
    now = db_now()
    with session_scope(engine) as session:
        if engine.dialect.name == "postgresql":  # READ COMMITTED: serialise the check and insert
            session.execute(text("SELECT pg_advisory_xact_lock(724002)"))
        alive = session.scalar(select(func.count(WorkerRow.id)).where(
            WorkerRow.stopped_at.is_(None), WorkerRow.heartbeat_at > now - max_age))
        if alive:
            return False
        session.add(WorkerRow(id=worker_id, host=host, pid=None, slots="starting",
                              started_at=now, heartbeat_at=now))
        return True


def heartbeat_worker(engine: Engine, worker_id: str) -> None:
    with session_scope(engine) as session:
        session.execute(update(WorkerRow).where(WorkerRow.id == worker_id)
                        .values(heartbeat_at=db_now()))


def stop_worker(engine: Engine, worker_id: str) -> None:
    """The worker signs off: it no longer counts as alive."""
    with session_scope(engine) as session:
        session.execute(update(WorkerRow).where(WorkerRow.id == worker_id)
                        .values(stopped_at=db_now()))


def worker_ids(engine: Engine) -> list[str]:
    with session_scope(engine, write=False) as session:
        return list(session.scalars(select(WorkerRow.id)))


def prune_workers(engine: Engine, older_than_s: float, dry_run: bool = False) -> list[str]:
    """Delete the rows of workers that stopped (or went silent) more than `older_than_s` ago and
    own no running run: one row per dashboard start would otherwise pile up. Returns their ids."""
    cutoff = db_now() - older_than_s
    owning = select(RunRow.worker_id).where(RunRow.status == RunStatus.RUNNING,
                                            RunRow.worker_id.is_not(None))
    gone = (WorkerRow.stopped_at < cutoff) | (WorkerRow.heartbeat_at < cutoff)
    with session_scope(engine) as session:
        ids = list(session.scalars(select(WorkerRow.id).where(gone, WorkerRow.id.not_in(owning))))
        if ids and not dry_run:
            session.execute(delete(WorkerRow).where(WorkerRow.id.in_(ids)))
    return ids


def live_workers(engine: Engine, max_age: float) -> pd.DataFrame:
    """Workers that have not signed off and beat within `max_age` seconds."""
    import pandas as pd  # here: the CLI's quick commands use this module without pandas

    query = select(*[getattr(WorkerRow, c) for c in WORKER_COLUMNS]).where(
        WorkerRow.stopped_at.is_(None), WorkerRow.heartbeat_at > db_now() - max_age)
    with session_scope(engine, write=False) as session:
        return pd.DataFrame(session.execute(query).mappings().all(), columns=WORKER_COLUMNS)


@dataclass(frozen=True)
class RunningRun:
    """A running run with what is known of the worker that owns it (None: no worker row)."""

    run_id: int
    worker_id: str | None
    heartbeat_at: float | None  # the run's own heartbeat
    heartbeat_interval: float | None
    owner_host: str | None
    owner_pid: int | None
    owner_started_at: float | None
    owner_heartbeat_at: float | None
    owner_stopped_at: float | None
    owner_host_id: str | None = None
    owner_process_started_at: float | None = None


def running_runs_with_owner(engine: Engine) -> list[RunningRun]:
    """Every running run and its worker's liveness, in one read-only query (reaping reads this
    first and writes only when something is lost, so listing runs never needs a write lock)."""
    query = select(
        RunRow.id, RunRow.worker_id, RunRow.heartbeat_at, RunRow.heartbeat_interval,
        WorkerRow.host, WorkerRow.pid, WorkerRow.started_at, WorkerRow.heartbeat_at,
        WorkerRow.stopped_at, WorkerRow.host_id, WorkerRow.process_started_at,
    ).outerjoin(WorkerRow, WorkerRow.id == RunRow.worker_id).where(
        RunRow.status == RunStatus.RUNNING)
    with session_scope(engine, write=False) as session:
        return [RunningRun(*row) for row in session.execute(query)]
