"""Background workers as real processes on a real SQLite file: claim, crash, cancel, stop."""

import contextlib
import os
import signal
import subprocess
import sys
import threading

import pytest

from cnn_ablation.config import RunConfig
from cnn_ablation.launch import submit
from storage import lifecycle
from storage.read_models import epochs_frame
from storage.runs import find_run, list_runs
from storage.workers import live_workers
from tests.support import ROOT, alive, wait_for

pytestmark = pytest.mark.slow
HEARTBEAT = 1.0
LONG = RunConfig(dataset="synthetic:3000", epochs=40, val_split=0.0)  # minutes: stopped by tests
QUICK = RunConfig(dataset="synthetic:100", epochs=1, batch_size=16)


@pytest.fixture
def workers(home):
    """Start worker processes; every one still alive is killed (with its children) at the end."""
    started: list[subprocess.Popen] = []
    env = {**os.environ, "ABLATION_HOME": str(home), "ABLATION_HEARTBEAT_SECONDS": str(HEARTBEAT),
           "ABLATION_CANCEL_GRACE_SECONDS": "10", "PYTHONUNBUFFERED": "1"}

    def start(*flags):
        log = open(home / f"worker-{len(started)}.out", "w")
        proc = subprocess.Popen([sys.executable, "-m", "cnn_ablation", "worker", "--gpus", "none",
                                 *flags], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if (home / "ablation.db").exists():  # training children left by a killed worker
        from storage.engine import get_engine

        for run in list_runs(get_engine(f"sqlite:///{home / 'ablation.db'}"),
                                     statuses=["running"]):
            if run.pid:
                with contextlib.suppress(OSError):
                    os.kill(run.pid, signal.SIGKILL)


def all_logs(home) -> str:
    return "\n".join(p.read_text() for p in [*home.glob("worker-*.out"), *home.glob("logs/*.log")])


def running_with_epochs(engine, run_id, n=1):
    run = find_run(engine, run_id)
    epochs = epochs_frame(engine, [run_id])
    return run.status == "running" and len(epochs) >= n and run.pid


def test_three_workers_complete_nine_runs_each_claimed_once(engine, home, workers):
    ids = submit(engine, [QUICK.with_changes(seed=s) for s in range(9)])
    procs = [workers("--once") for _ in range(3)]
    for proc in procs:
        assert proc.wait(timeout=600) == 0
    runs = list_runs(engine)
    assert [r.status for r in runs] == ["completed"] * 9
    logs = all_logs(home)
    for run_id in ids:
        assert logs.count(f"run {run_id}: started on") == 1, f"run {run_id} claimed twice"
    assert len({r.worker_id for r in runs}) >= 2  # the queue really was shared
    assert "database is locked" not in logs


def test_killed_worker_marks_run_failed_and_keeps_epochs(engine, home, workers):
    long_id, *quick_ids = submit(engine, [LONG, QUICK, QUICK.with_changes(seed=1)])
    first = workers()
    child_pid = wait_for(lambda: running_with_epochs(engine, long_id), what="epoch 1 of run 1")
    first.kill()  # kill -9 in the middle of epoch 2
    wait_for(lambda: not alive(child_pid), timeout=15, what="orphaned child to stop")
    second = workers("--once")
    assert second.wait(timeout=300) == 0
    lost = find_run(engine, long_id)
    assert lost.status == "failed" and lost.error.startswith("worker lost")
    assert len(epochs_frame(engine, [long_id])) >= 1  # finished epochs are kept
    assert [find_run(engine, i).status for i in quick_ids] == ["completed", "completed"]


def test_killed_training_process_marks_run_failed(engine, home, workers):
    (run_id,) = submit(engine, [LONG])
    workers()
    child_pid = wait_for(lambda: running_with_epochs(engine, run_id), what="epoch 1")
    os.kill(child_pid, signal.SIGKILL)
    run = wait_for(lambda: (r := find_run(engine, run_id)).status != "running" and r,
                   timeout=30, what="run to leave running")
    assert run.status == "failed"
    assert run.error.startswith("worker lost: training process killed by signal SIGKILL")
    assert len(epochs_frame(engine, [run_id])) >= 1


def test_cancel_running_run_stops_within_seconds_keeping_epochs(engine, home, workers, cli):
    (run_id,) = submit(engine, [LONG])
    workers()
    wait_for(lambda: running_with_epochs(engine, run_id), what="epoch 1")
    result = cli("cancel", str(run_id), env={"ABLATION_HOME": str(home)})
    assert "cancel requested" in result.stdout
    run = wait_for(lambda: (r := find_run(engine, run_id)).status != "running" and r,
                   timeout=30, what="cancelled status")
    assert run.status == "cancelled" and run.error == "cancelled by user"
    assert 1 <= len(epochs_frame(engine, [run_id])) < LONG.epochs


def test_cancelled_queued_run_never_starts(engine, home, workers):
    first, second = submit(engine, [QUICK, QUICK.with_changes(seed=1)])
    assert lifecycle.request_cancel(engine, first) == "cancelled"
    assert workers("--once").wait(timeout=300) == 0
    cancelled = find_run(engine, first)
    assert cancelled.status == "cancelled" and cancelled.started_at is None
    assert find_run(engine, second).status == "completed"


def test_sigterm_lets_the_epoch_finish_and_leaves_nothing_running(engine, home, workers):
    (run_id,) = submit(engine, [LONG])
    worker = workers()
    wait_for(lambda: running_with_epochs(engine, run_id), what="epoch 1")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0
    run = find_run(engine, run_id)
    assert run.status == "cancelled" and run.error == "worker stopped"
    assert list_runs(engine, statuses=["running"]) == []
    assert len(live_workers(engine, max_age=60)) == 0  # it signed off


def test_stale_heartbeat_is_reaped_after_twice_the_interval(engine):
    (run_id,) = submit(engine, [QUICK])
    claimed = lifecycle.claim(engine, "w", "host", "cpu", heartbeat_interval=10.0)
    assert claimed.id == run_id
    beat = find_run(engine, run_id).heartbeat_at
    assert lifecycle.reap_stale(engine, now=beat + 19.9) == []
    assert lifecycle.reap_stale(engine, now=beat + 20.1) == [run_id]
    assert find_run(engine, run_id).error.startswith("worker lost")


def test_app_helper_starts_exactly_one_worker_when_called_repeatedly(engine, home, monkeypatch):
    from cnn_ablation.worker import ensure_local_worker

    monkeypatch.setenv("ABLATION_START_WORKER", "1")
    monkeypatch.setenv("ABLATION_HEARTBEAT_SECONDS", str(HEARTBEAT))
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_local_worker(engine)))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results += [ensure_local_worker(engine) for _ in range(3)]
    started = [r for r in results if r]
    assert len(started) == 1
    def registered():
        live = live_workers(engine, 5)
        return live.to_dict("records") if len(live) and live["pid"].notna().all() else None

    live = wait_for(registered, timeout=60, what="the worker's own heartbeat")
    assert [w["id"] for w in live] == started
    pid = int(live[0]["pid"])
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), timeout=30, what="worker to exit")
