"""Fixtures: a fresh ABLATION_HOME with its own SQLite file, the CLI as a user runs it, and one
way to make a run in each state (written through storage's own functions, as a worker would)."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import update

from tests.support import HEARTBEAT, ROOT, TEST_WORKER

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # tests run on CPU, GPU or not


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh ABLATION_HOME with its own SQLite file, for this test alone."""
    monkeypatch.setenv("ABLATION_HOME", str(tmp_path))
    monkeypatch.delenv("ABLATION_DATABASE_URL", raising=False)
    monkeypatch.setenv("ABLATION_START_WORKER", "0")
    return tmp_path


def pytest_generate_tests(metafunc):
    """Tests marked `both_backends` run once on SQLite and once on PostgreSQL."""
    if "engine" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
            "both_backends"):
        metafunc.parametrize("engine", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL server for the whole session (tests/postgres.py). It is never
    skipped: if it cannot start, every test that needs it fails with the reason."""
    from tests.postgres import PostgresServer, PostgresUnavailable

    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as exc:
        server.stop()
        pytest.fail(f"PostgreSQL could not be started for the tests: {exc}")
    yield server
    server.stop()


@pytest.fixture
def engine(request, home, monkeypatch):
    """The test's database: a SQLite file in `home`, or (parametrized "postgresql") a fresh
    database on the session's PostgreSQL server, which every process started by the test uses
    too (ABLATION_DATABASE_URL)."""
    from cnn_ablation.storage.engine import get_engine

    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield get_engine(f"sqlite:///{home / 'ablation.db'}")
        return
    server = request.getfixturevalue("postgres")
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = server.create(name)
    monkeypatch.setenv("ABLATION_DATABASE_URL", url)
    engine = get_engine(url)
    yield engine
    engine.dispose()
    server.drop(name)


@pytest.fixture
def cli():
    """Run `python -m cnn_ablation ARGS` as a user would, in the repo root."""

    def run(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cnn_ablation", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})

    return run


@pytest.fixture
def make_run(engine):
    """`make_run(config, status, accuracies=[...], **columns)` -> run id.

    queued: as submitted. running: started in the foreground (a 60 s heartbeat interval, so
    nothing reaps it during a test). Any final status: started, one epoch row per accuracy,
    then finished with test metrics. `columns` overwrite stored values afterwards (times,
    host, config) for tests about what was stored.
    """
    from cnn_ablation.jobs.launch import new_run
    from cnn_ablation.storage import lifecycle, runs
    from cnn_ablation.storage.engine import session_scope
    from cnn_ablation.storage.models import RunRow

    def make(config, status="completed", accuracies=(), **columns):
        if status == "queued":
            run_id = runs.create_runs(engine, [new_run(config)])[0]
        else:
            run_id = lifecycle.start_foreground(engine, new_run(config), TEST_WORKER,
                                                socket.gethostname(), "cpu",
                                                heartbeat_interval=60.0)
        for epoch, acc in enumerate(accuracies, start=1):
            lifecycle.record_epoch(engine, run_id, TEST_WORKER, epoch, {
                "loss": 2 - acc, "accuracy": acc, "val_loss": 2.1 - acc,
                "val_accuracy": acc - 0.05}, seconds=1.5)
        if status not in ("queued", "running"):
            final = accuracies[-1] - 0.06 if accuracies else None
            lifecycle.finish(engine, run_id, status, test_accuracy=final,
                             test_loss=1.0 if accuracies else None)
        if columns:
            with session_scope(engine) as session:
                session.execute(update(RunRow).where(RunRow.id == run_id).values(**columns))
        return run_id

    return make



@pytest.fixture
def workers(home, engine):
    """`workers(*flags, env={...})` starts a worker process on `home` (its output in
    home/worker-N.out, or `out_dir`); every one still alive is killed, with the training
    processes it left, at the end."""
    started: list[subprocess.Popen] = []
    base = {**os.environ, "ABLATION_HOME": str(home), "ABLATION_HEARTBEAT_SECONDS": str(HEARTBEAT),
            "ABLATION_CANCEL_GRACE_SECONDS": "10", "PYTHONUNBUFFERED": "1"}

    def start(*flags, env=None, out_dir=None):
        log = open((out_dir or home) / f"worker-{len(started)}.out", "w")
        proc = subprocess.Popen([sys.executable, "-m", "cnn_ablation", "worker", "--gpus", "none",
                                 *flags], cwd=ROOT, env={**base, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for pid in _training_pids(home):  # training processes left by a killed worker
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _training_pids(home) -> list[int]:
    import psutil

    pids = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        with contextlib.suppress(psutil.Error):
            cmdline = process.info["cmdline"] or []
            if "execute" in cmdline and (process.info["environ"] or {}).get(
                    "ABLATION_HOME") == str(home):
                pids.append(process.pid)
    return pids
