"""Background workers as real processes on a real SQLite file: claim, crash, cancel, stop."""

import os
import signal
import subprocess
import sys
import threading

import pytest

from cnn_ablation.config import RunConfig
from cnn_ablation.jobs.launch import submit
from cnn_ablation.storage import lifecycle
from cnn_ablation.storage.curves import epochs_frame
from cnn_ablation.storage.runs import find_run, list_runs
from cnn_ablation.storage.workers import live_workers, register_worker
from tests.support import (
    HEARTBEAT,
    ROOT,
    alive,
    requeued_by_sigterm,
    running_with_epochs,
    wait_for,
)

pytestmark = pytest.mark.slow
LONG = RunConfig(dataset="synthetic:3000", epochs=40, val_split=0.0)  # minutes: stopped by tests
QUICK = RunConfig(dataset="synthetic:100", epochs=1, batch_size=16)


def all_logs(home) -> str:
    return "\n".join(p.read_text() for p in [*home.glob("worker-*.out"), *home.glob("logs/*.log")])


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


def test_cancel_stops_a_running_run_after_its_epoch_and_keeps_that_epoch(engine, home, workers,
                                                                        cli):
    (run_id,) = submit(engine, [LONG])
    workers()
    wait_for(lambda: running_with_epochs(engine, run_id), what="epoch 1")
    result = cli("cancel", str(run_id), env={"ABLATION_HOME": str(home)})
    assert "stopping after its current epoch" in result.stdout
    assert find_run(engine, run_id).cancel_requested  # the page shows "cancelling…" from here
    run = wait_for(lambda: (r := find_run(engine, run_id)).status != "running" and r,
                   timeout=60, what="cancelled status")
    kept = len(epochs_frame(engine, [run_id]))
    assert run.status == "cancelled" and run.error == f"cancelled by user after epoch {kept}"
    assert 1 <= kept < LONG.epochs


def test_cancel_now_stops_mid_epoch_and_never_stores_the_partial_epoch(engine, home, workers,
                                                                        cli):
    (run_id,) = submit(engine, [LONG.with_changes(dataset="synthetic:6000")])  # long epochs
    workers()
    wait_for(lambda: running_with_epochs(engine, run_id), what="epoch 1")
    wait_for(lambda: (find_run(engine, run_id).progress_batch or 0) > 5, what="epoch 2 under way")
    result = cli("cancel", "--now", str(run_id), env={"ABLATION_HOME": str(home)})
    assert "stopping now" in result.stdout
    run = wait_for(lambda: (r := find_run(engine, run_id)).status != "running" and r,
                   timeout=60, what="cancelled status")
    stopped_in = int(run.error.split("stopped in epoch ")[1].split(";")[0])
    assert run.status == "cancelled" and "partial epoch is not kept" in run.error
    assert epochs_frame(engine, [run_id])["epoch"].tolist() == list(range(1, stopped_in))


def test_cancelled_queued_run_never_starts(engine, home, workers):
    first, second = submit(engine, [QUICK, QUICK.with_changes(seed=1)])
    assert lifecycle.request_cancel(engine, first) == "cancelled"
    assert workers("--once").wait(timeout=300) == 0
    cancelled = find_run(engine, first)
    assert cancelled.status == "cancelled" and cancelled.started_at is None
    assert find_run(engine, second).status == "completed"


def test_sigterm_requeues_with_a_checkpoint_and_the_next_worker_resumes_it(engine, home,
                                                                           workers):
    run_id, done = requeued_by_sigterm(engine, workers)
    run = find_run(engine, run_id)
    assert f"worker stopped after epoch {done}" in run.notes and run.checkpoint_path
    assert list_runs(engine, statuses=["running"]) == []
    assert len(live_workers(engine, max_age=60)) == 0  # it signed off

    assert workers("--once").wait(timeout=300) == 0
    run = find_run(engine, run_id)
    assert run.status == "completed" and run.test_accuracy is not None
    assert epochs_frame(engine, [run_id])["epoch"].tolist() == [1, 2, 3, 4]  # the curve goes on
    assert f"resumed at epoch {done + 1}" in run.notes
    assert not os.path.exists(run.checkpoint_path or "")  # the checkpoint went with completion


def test_another_hosts_run_is_reaped_only_after_its_worker_is_silent_past_the_margin(engine):
    from cnn_ablation.jobs.liveness import lost_after_s, reap_lost_runs

    (run_id,) = submit(engine, [QUICK])
    register_worker(engine, "far", "another-host", 4242, "cpu")
    lifecycle.claim(engine, "far", "another-host", "cpu", heartbeat_interval=10.0)
    beat = live_workers(engine, 60).iloc[0]["heartbeat_at"]
    limit = lost_after_s(10.0)
    assert limit > 2 * 10.0 + 30  # longer than a write that waits the whole busy timeout
    assert reap_lost_runs(engine, now=beat + limit - 1) == []
    assert reap_lost_runs(engine, now=beat + limit + 1) == [run_id]
    assert find_run(engine, run_id).error.startswith("worker lost: no heartbeat from worker far")


def test_a_run_whose_worker_process_is_gone_on_this_host_is_reaped_at_once(engine):
    import socket

    from cnn_ablation.jobs.liveness import reap_lost_runs

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    first, second = submit(engine, [QUICK, QUICK.with_changes(seed=1)])
    register_worker(engine, "dead", socket.gethostname(), gone.pid, "cpu")
    lifecycle.claim(engine, "dead", socket.gethostname(), "cpu", heartbeat_interval=10.0)
    register_worker(engine, "alive", socket.gethostname(), os.getpid(), "cpu")
    lifecycle.claim(engine, "alive", socket.gethostname(), "cpu", heartbeat_interval=10.0)
    far_future = 10**10  # a live worker here is never judged by its clock
    assert reap_lost_runs(engine, now=far_future) == [first]
    assert "is gone" in find_run(engine, first).error
    assert find_run(engine, second).status == "running"


def test_a_database_clock_behind_this_host_never_fails_a_live_workers_run(engine):
    """The worker's start is compared on one clock: the database's clock 3 s behind this host
    made psutil's start time (host clock) look later than `workers.started_at` (database clock),
    and a live worker's run was failed as "is gone" within one beat."""
    import socket

    from cnn_ablation.jobs.liveness import reap_lost_runs
    from cnn_ablation.storage.engine import session_scope
    from cnn_ablation.storage.models import WorkerRow

    (run_id,) = submit(engine, [QUICK])
    register_worker(engine, "lagging", socket.gethostname(), os.getpid(), "cpu")
    lifecycle.claim(engine, "lagging", socket.gethostname(), "cpu", heartbeat_interval=10.0)
    with session_scope(engine) as session:  # as a database 3 s behind would have stamped it
        row = session.get(WorkerRow, "lagging")
        row.started_at -= 3.0
    assert reap_lost_runs(engine) == []
    assert find_run(engine, run_id).status == "running"


def test_two_machines_with_one_hostname_judge_each_other_by_heartbeat_not_pid(engine):
    """A worker on another machine that has this one's hostname: its pid means nothing here, so
    it is judged by its heartbeat (its host identity differs), not failed as "gone"."""
    import socket

    from cnn_ablation.jobs.liveness import lost_after_s, reap_lost_runs
    from cnn_ablation.storage.engine import session_scope
    from cnn_ablation.storage.models import WorkerRow

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that is not alive here
    (run_id,) = submit(engine, [QUICK])
    register_worker(engine, "twin", socket.gethostname(), gone.pid, "cpu")
    lifecycle.claim(engine, "twin", socket.gethostname(), "cpu", heartbeat_interval=10.0)
    with session_scope(engine) as session:
        session.get(WorkerRow, "twin").host_id = "another-machine:boot:ns"
    beat = live_workers(engine, 60).iloc[0]["heartbeat_at"]
    assert reap_lost_runs(engine, now=beat + 1) == []
    assert reap_lost_runs(engine, now=beat + lost_after_s(10.0) + 1) == [run_id]
    assert "no heartbeat from worker twin" in find_run(engine, run_id).error


def test_app_helper_starts_exactly_one_worker_when_called_repeatedly(engine, home, monkeypatch):
    from cnn_ablation.jobs.worker import ensure_local_worker

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


def test_a_worker_run_samples_steps_writes_tensorboard_files_and_delete_removes_its_files(
        engine, home, workers):
    from cnn_ablation.jobs.launch import delete_runs
    from cnn_ablation.storage.curves import step_rows
    from cnn_ablation.training.pipeline import STEPS_PER_EXECUTION
    from tests.test_training import event_scalars

    config = RunConfig(dataset="synthetic:2000", epochs=2)  # 1,800 fit images: 57 batches
    (run_id,) = submit(engine, [config])
    assert workers("--once").wait(timeout=600) == 0
    run = find_run(engine, run_id)
    assert run.status == "completed", run.error
    steps = step_rows(engine, [run_id])
    numbers = [r["step"] for r in steps]
    # steps run 16 per call (training.STEPS_PER_EXECUTION): the first call is sampled, at its
    # last step, and every sample is a call's last step: a 16th step or the epoch's last
    assert numbers == sorted(set(numbers)) and numbers[0] == STEPS_PER_EXECUTION == 16
    assert all(r["epoch"] == (r["step"] - 1) // 57 + 1 for r in steps)  # epochs match steps
    assert all((r["step"] - 57 * (r["epoch"] - 1)) % 16 == 0 or r["step"] % 57 == 0
               for r in steps)
    epochs = epochs_frame(engine, [run_id]).set_index("epoch")
    by_step = {r["step"]: r for r in steps}
    for epoch in (1, 2):  # each epoch ends on its own training loss
        assert by_step[epoch * 57]["loss"] == epochs.loc[epoch, "loss"]
    assert len(steps) <= 2 * (2 + run.finished_at - run.started_at)  # at most ~1 a second

    tensorboard = home / "tensorboard" / f"run-{run_id}"
    train = event_scalars(tensorboard / "train")
    assert train["epoch_loss"] == pytest.approx(epochs["loss"].to_dict(), rel=1e-6)
    assert set(train["batch_loss"]) == set(numbers)
    assert event_scalars(tensorboard / "test")["epoch_accuracy"] == pytest.approx(
        {2: run.test_accuracy}, rel=1e-6)

    log_file = home / "logs" / os.path.basename(run.log_path)
    assert log_file.exists() and tensorboard.is_dir()
    removed = delete_runs(engine, [run_id])
    assert set(removed) == {log_file, tensorboard}
    assert not log_file.exists() and not tensorboard.exists() and find_run(engine, run_id) is None
    assert step_rows(engine, [run_id]) == []


def _catches_sigterm(pid: int) -> bool:
    """The process has a handler for SIGTERM (bit 15 of SigCgt in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def test_sigterm_while_the_training_process_starts_puts_the_run_back_in_the_queue(engine, home):
    """The worker stops (SIGTERM to its children) while a child is still importing TensorFlow:
    the run goes back to the queue instead of failing as "killed by signal SIGTERM"."""
    from tests.support import ROOT

    (run_id,) = submit(engine, [QUICK])
    lifecycle.claim(engine, "w-start", "h", "cpu", 60.0)
    register_worker(engine, "w-start", "h", os.getpid(), "cpu")
    env = {**os.environ, "ABLATION_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-m", "cnn_ablation", "execute", str(run_id)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for(lambda: _catches_sigterm(child.pid), timeout=60,
             what="the training process's first line (its SIGTERM handler)")
    child.send_signal(signal.SIGTERM)  # long before TensorFlow is imported
    out = child.communicate(timeout=300)[0].decode(errors="replace")
    assert child.returncode == 0, out[-3000:]
    run = find_run(engine, run_id)
    assert run.status == "queued" and run.worker_id is None, (run.status, run.error)
    assert "stopped while starting: back in the queue" in run.notes
    assert epochs_frame(engine, [run_id]).empty


def test_a_workers_own_log_starts_afresh_past_its_size_and_keeps_one_earlier_part(tmp_path):
    """A real process whose stdout and stderr are a file under the logs folder (as a worker the
    dashboard starts): past the limit, the file so far is kept as `.1` and what the process
    writes next, through print, logging, and straight to file descriptor 2, goes to a fresh
    file of the same name. Outside the logs folder nothing is touched."""
    import subprocess
    import sys

    logs = tmp_path / "logs"
    logs.mkdir()
    script = (
        "import logging, os, sys\n"
        "from pathlib import Path\n"
        "from cnn_ablation import log\n"
        "log.setup('worker')\n"
        "print('old line ' + 'x' * 2000, flush=True)\n"
        "kept = log.rotate_own_log(Path(sys.argv[1]), limit=1000)\n"
        "print('kept', kept, flush=True)\n"
        "logging.getLogger('cnn_ablation.test').info('after')\n"
        "os.write(2, b'straight to fd 2\\n')\n"
        "print('again', log.rotate_own_log(Path(sys.argv[1]), limit=1000), flush=True)\n")
    for where, expect_rotation in ((logs, True), (tmp_path / "elsewhere", False)):
        where.mkdir(exist_ok=True)
        path = where / "worker-x.log"
        with open(path, "ab") as out:
            subprocess.run([sys.executable, "-c", script, str(logs)], stdout=out,
                           stderr=subprocess.STDOUT, cwd=ROOT, check=True, timeout=120)
        text = path.read_text()
        if expect_rotation:
            earlier = (logs / "worker-x.log.1").read_text()
            assert "old line" in earlier and "kept" not in earlier
            assert "old line" not in text
            assert f"kept {path}.1" in text and "log started afresh" in text
            assert "after" in text and "straight to fd 2" in text
            assert "again None" in text  # the fresh file is small: not rotated again
        else:
            assert not (where / "worker-x.log.1").exists()
            assert "old line" in text and "kept None" in text


def test_the_workers_command_lists_a_live_worker_and_stops_it_with_its_run_requeued(
        engine, home, workers, cli):
    """What a Ctrl-C on `make run` leaves training (the dashboard's own worker) is found with
    `workers` and stopped with `workers --stop`: its run checkpoints and is queued again."""
    from cnn_ablation.config import RunConfig

    (run_id,) = submit(engine, [RunConfig(dataset="synthetic:2000", epochs=4, val_split=0.0)])
    worker = workers()
    wait_for(lambda: running_with_epochs(engine, run_id), what="epoch 1")
    listed = cli("workers", env={"ABLATION_HEARTBEAT_SECONDS": str(HEARTBEAT)})
    assert listed.returncode == 0, listed.stderr
    assert str(worker.pid) in listed.stdout and f"#{run_id}" in listed.stdout
    refused = cli("workers", "--stop", "no-such-worker")
    assert refused.returncode == 2 and "--stop: 'no-such-worker' is not allowed" in refused.stderr
    stopped = cli("workers", "--stop", "all", env={"ABLATION_HEARTBEAT_SECONDS": str(HEARTBEAT)})
    assert stopped.returncode == 0, stopped.stderr
    assert f"(pid {worker.pid}) to stop" in stopped.stdout
    assert worker.wait(timeout=180) == 0
    run = find_run(engine, run_id)
    assert run.status == "queued" and run.resume_epoch and run.checkpoint_path
    after = cli("workers", env={"ABLATION_HEARTBEAT_SECONDS": str(HEARTBEAT)})
    assert "no worker is running" in after.stdout
