"""Faults, done for real to real processes on real SQLite files: a hung training process, a long
exclusive lock, a full filesystem, a run taken away under a live process, and many workers on a
loaded machine. (Killed workers and training processes, cancel and SIGTERM restarts are in
test_worker.py.) Each test asserts that no person is needed afterwards."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading

import pytest

from cnn_ablation.config import RunConfig
from cnn_ablation.jobs.launch import submit
from cnn_ablation.storage import lifecycle
from cnn_ablation.storage.curves import epochs_frame
from cnn_ablation.storage.engine import get_engine
from cnn_ablation.storage.runs import find_run, list_runs
from tests.support import alive, requeued_by_sigterm, running_with_epochs, wait_for

pytestmark = pytest.mark.slow
LONG = RunConfig(dataset="synthetic:3000", epochs=40, val_split=0.0)  # minutes: stopped by tests
QUICK = RunConfig(dataset="synthetic:100", epochs=1, batch_size=16)


def test_a_hung_training_process_is_killed_and_its_run_failed_naming_the_limit(engine, workers):
    (hung, after) = submit(engine, [LONG, QUICK])
    # Long enough for a training process to start on a loaded 2-core machine (imports take
    # seconds with no progress beat), short enough for the test.
    worker = workers(env={"ABLATION_NO_PROGRESS_SECONDS": "45"})
    pid = wait_for(lambda: running_with_epochs(engine, hung), what="epoch 1")
    os.kill(pid, signal.SIGSTOP)  # hung: alive, but no progress from its training loop
    try:
        run = wait_for(lambda: (r := find_run(engine, hung)).status != "running" and r,
                       timeout=180, what="the hung run to be failed")
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert run.status == "failed"
    assert run.error.startswith("no progress for") and "limit 45 s" in run.error
    assert not alive(pid)  # killed, not left stopped
    assert len(epochs_frame(engine, [hung])) >= 1  # its finished epochs are kept
    wait_for(lambda: find_run(engine, after).status == "completed", timeout=300,
             what="the next run, on the same worker")
    assert worker.poll() is None


def test_a_40_second_exclusive_lock_delays_training_but_fails_nothing(engine, home, workers):
    config = RunConfig(dataset="synthetic:2000", epochs=5, val_split=0.0)
    (run_id,) = submit(engine, [config])
    worker = workers()
    wait_for(lambda: running_with_epochs(engine, run_id), what="epoch 1")
    locked = threading.Event()

    def hold_lock():
        conn = sqlite3.connect(home / "ablation.db", isolation_level=None, timeout=60)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        threading.Event().wait(40)  # longer than the 30 s busy timeout
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert locked.wait(60)
    holder.join()
    run = wait_for(lambda: (r := find_run(engine, run_id)).status != "running" and r,
                   timeout=300, what="the run to end after the lock")
    assert run.status == "completed", run.error
    assert epochs_frame(engine, [run_id])["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert worker.poll() is None  # it waited, logged, retried: never exited
    log = (home / "worker-0.out").read_text()
    assert "database error" in log or "locked" in log


def test_a_full_disk_fails_the_run_saying_so_and_the_worker_resumes_when_space_returns(
        tmp_path, monkeypatch, workers):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail("this fault needs a small filesystem: `mount -t tmpfs` failed "
                    f"({mounted.stderr.strip()}); run the suite as root (CI does)")
    try:
        monkeypatch.setenv("ABLATION_HOME", str(disk))
        engine = get_engine(f"sqlite:///{disk / 'ablation.db'}")
        first, second = submit(engine, [LONG, QUICK])
        worker = workers(env={"ABLATION_HOME": str(disk)}, out_dir=tmp_path)
        pid = wait_for(lambda: running_with_epochs(engine, first), what="epoch 1")
        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
        wait_for(lambda: "disk full" in (tmp_path / "worker-0.out").read_text(), timeout=120,
                 what="the worker to notice the full disk")
        wait_for(lambda: not alive(pid), timeout=180,
                 what="the training process to stop at its next epoch: it cannot save it")
        assert worker.poll() is None and find_run(engine, second).status == "queued"
        filler.unlink()
        run = wait_for(lambda: (r := find_run(engine, first)).status != "running" and r,
                       timeout=120, what="the run's failure to be recorded")
        assert run.status == "failed" and run.error.startswith("disk full")
        assert len(epochs_frame(engine, [first])) >= 1
        wait_for(lambda: find_run(engine, second).status == "completed", timeout=300,
                 what="claiming to resume once writes succeed")
        assert worker.poll() is None
    finally:
        for left in list_runs(get_engine(f"sqlite:///{disk / 'ablation.db'}"),
                              statuses=["running"]):
            if left.pid and alive(left.pid):
                os.kill(left.pid, signal.SIGKILL)
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_run_taken_away_under_a_live_process_stops_being_written(engine, workers):
    (run_id,) = submit(engine, [LONG])
    workers()
    pid = wait_for(lambda: running_with_epochs(engine, run_id), what="epoch 1")
    assert lifecycle.finish(engine, run_id, "failed", error="taken away by the test")
    wait_for(lambda: not alive(pid), timeout=60, what="the training process to stop")
    epochs = len(epochs_frame(engine, [run_id]))
    run = find_run(engine, run_id)
    assert run.status == "failed" and run.error == "taken away by the test"  # not overwritten
    assert len(epochs_frame(engine, [run_id])) == epochs


def test_four_workers_and_32_runs_with_a_1_second_heartbeat_reap_nothing_alive(engine, home,
                                                                                workers):
    ids = submit(engine, [QUICK.with_changes(seed=s) for s in range(32)])
    procs = [workers("--once") for _ in range(4)]
    for proc in procs:
        assert proc.wait(timeout=1200) == 0
    runs = list_runs(engine)
    logs = "\n".join(p.read_text() for p in home.glob("worker-*.out"))
    reaped = [r.id for r in runs if (r.error or "").startswith("worker lost")]
    double = [i for i in ids if logs.count(f"run {i}: started on") != 1]
    stranded = [r.id for r in runs if r.status in ("queued", "running")]
    print(f"\nruns {len(runs)}, workers 4, live runs reaped {len(reaped)}, "
          f"double claims {len(double)}, stranded {len(stranded)}")
    assert (reaped, double, stranded) == ([], [], [])
    assert [r.status for r in runs] == ["completed"] * 32
    assert len({r.worker_id for r in runs}) >= 2  # the queue really was shared


def test_a_killed_worker_is_seen_gone_by_the_page_and_cli_without_waiting(engine, home, workers,
                                                                         cli):
    (run_id,) = submit(engine, [LONG])
    worker = workers()
    pid = wait_for(lambda: running_with_epochs(engine, run_id), what="epoch 1")
    worker.kill()
    worker.wait()
    wait_for(lambda: not alive(pid), timeout=30, what="its orphaned training process to stop")
    shown = cli("show", str(run_id), env={"ABLATION_HOME": str(home)})
    assert shown.returncode == 0
    run = find_run(engine, run_id)
    assert run.status == "failed" and "is gone" in run.error


def test_ctrl_c_while_a_foreground_train_starts_leaves_no_running_run(engine, home):
    from tests.support import ROOT

    env = {**os.environ, "ABLATION_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnn_ablation", "train", "--dataset",
                             "synthetic:3000", "--epochs", "40"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # a shell's background job inherits SIGINT ignored: undo that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = proc.stdout.readline()  # "run 1: ..." is printed before TensorFlow loads
    assert first.startswith("run 1:"), first
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    run = find_run(engine, 1)
    assert run.status == "cancelled" and "interrupted" in run.error



def test_a_run_requeued_with_a_checkpoint_this_host_lacks_fails_saying_so_keeping_its_epochs(
        engine, home, workers):
    """SIGTERM puts a run back in the queue with a checkpoint on its worker's disk. A worker on
    another host, where that file is not, cannot resume it: the run fails naming the checkpoint
    and the host, before it trains a step, with the epochs of its one training kept; the
    worker goes on with the queue."""
    run_id, done = requeued_by_sigterm(engine, workers)
    before = epochs_frame(engine, [run_id])
    checkpoint = find_run(engine, run_id).checkpoint_path
    os.rename(checkpoint, home / "on-the-other-host.keras")  # this host never had it
    (after,) = submit(engine, [QUICK])

    assert workers("--once").wait(timeout=300) == 0
    run = find_run(engine, run_id)
    assert run.status == "failed", (run.error, run.notes)
    plural = "s" if done != 1 else ""
    assert run.error.startswith(
        f"CheckpointMissing: checkpoint {checkpoint} not found on {socket.gethostname()}: the "
        f"run cannot resume after epoch {done} here"), run.error
    assert f"its {done} epoch{plural} are kept; Retry queues it again" in run.error
    assert epochs_frame(engine, [run_id]).equals(before)  # the one training, untouched
    assert "resumed at epoch" not in (run.notes or "")
    assert find_run(engine, after).status == "completed"  # the worker carried on


def test_a_run_whose_process_cannot_start_is_failed_saying_why_never_left_running(
        engine, home, workers):
    """The worker's logs folder removed under it: the next run still starts (the folder is made
    again). Then `logs` is a file, so no run's log can be opened and no process starts: each
    claimed run fails at once naming the error, instead of sitting `running` with no process
    for as long as the worker lives."""
    import shutil

    from cnn_ablation.storage.workers import live_workers

    worker = workers()
    wait_for(lambda: len(live_workers(engine, 60.0)), timeout=120, what="the worker to register")
    shutil.rmtree(home / "logs")
    (first,) = submit(engine, [QUICK])
    run = wait_for(lambda: (r := find_run(engine, first)).status not in ("queued", "running")
                   and r, timeout=300, what="the run after its logs folder was removed")
    assert run.status == "completed", run.error
    shutil.rmtree(home / "logs")
    (home / "logs").write_text("not a folder")
    second, third = submit(engine, [QUICK, QUICK])
    for run_id in (second, third):
        run = wait_for(lambda run_id=run_id: (r := find_run(engine, run_id)).status
                       not in ("queued", "running") and r, timeout=120,
                       what="the run whose process cannot start to end")
        assert run.status == "failed" and run.pid is None
        assert run.error.startswith("the training process could not be started on ")
        assert "FileExistsError" in run.error or "NotADirectoryError" in run.error, run.error
    assert worker.poll() is None  # the worker lives on


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)  # (SQLite: see below)
def test_a_database_read_only_for_training_processes_fails_one_run_saying_so_and_pauses(
        engine, home, workers):
    """The database turns read-only for new sessions (PostgreSQL's default_transaction_read_only;
    the worker's own connections, opened before, still write): the first run's training process
    cannot attach, the run fails saying the database is read-only, and the worker stops claiming
    for a while instead of failing every queued run in seconds. (SQLite has no per-session
    read-only switch, and as root, which CI is, file modes do not bind: PostgreSQL shows it.)"""
    from sqlalchemy import text

    from cnn_ablation.storage.workers import live_workers

    worker = workers()
    wait_for(lambda: len(live_workers(engine, 60.0)), timeout=120, what="the worker to register")
    database = engine.url.database
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'))
    first, second = submit(engine, [QUICK, QUICK])
    run = wait_for(lambda: (r := find_run(engine, first)).status == "failed" and r, timeout=180,
                   what="the first run to fail")
    assert run.error.startswith("the database is read-only for the training process"), run.error
    assert find_run(engine, second).status == "queued"  # not claimed and failed in turn
    assert worker.poll() is None
