"""Fixtures: a fresh ABLATION_HOME with its own SQLite file, the CLI as a user runs it, and one
way to make a run in each state (written through storage's own functions, as a worker would)."""

import os
import socket
import subprocess
import sys

import pytest
from sqlalchemy import update

from tests.support import ROOT

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # tests run on CPU, GPU or not


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh ABLATION_HOME with its own SQLite file, for this test alone."""
    monkeypatch.setenv("ABLATION_HOME", str(tmp_path))
    monkeypatch.delenv("ABLATION_DATABASE_URL", raising=False)
    monkeypatch.setenv("ABLATION_START_WORKER", "0")
    return tmp_path


@pytest.fixture
def engine(home):
    from storage.engine import get_engine

    return get_engine(f"sqlite:///{home / 'ablation.db'}")


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
    from cnn_ablation.launch import new_run
    from storage import lifecycle, runs
    from storage.engine import session_scope
    from storage.models import RunRow

    def make(config, status="completed", accuracies=(), **columns):
        if status == "queued":
            run_id = runs.create_runs(engine, [new_run(config)])[0]
        else:
            run_id = lifecycle.start_foreground(engine, new_run(config), socket.gethostname(),
                                                "cpu", heartbeat_interval=60.0)
        for epoch, acc in enumerate(accuracies, start=1):
            lifecycle.record_epoch(engine, run_id, epoch, {
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
