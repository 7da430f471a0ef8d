"""The Ray executor against a real Ray cluster on 127.0.0.1: `ray start --head` in a temp folder,
and real `python -m cnn_ablation worker --executor ray` processes that train `synthetic` runs as
Ray tasks. Complete, cancel, a killed training process, a killed Ray worker process, and a worker
stopped with SIGTERM (the run goes back to the queue with a checkpoint). If Ray cannot start,
these tests fail with the reason; they are never skipped."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from cnn_ablation.config import RunConfig
from cnn_ablation.jobs.launch import submit
from cnn_ablation.jobs.ray_executor import (
    RayTask,
    check_options,
    default_slots,
    passed_env,
    ray_slots,
    task_resources,
)
from cnn_ablation.storage import lifecycle
from cnn_ablation.storage.curves import epochs_frame
from cnn_ablation.storage.runs import find_run
from tests.support import HEARTBEAT, ROOT, alive, free_port, wait_for

LONG = RunConfig(dataset="synthetic:3000", epochs=40, val_split=0.0)  # minutes: stopped by tests
QUICK = RunConfig(dataset="synthetic:100", epochs=1, batch_size=16)
# Ray picks the machine's outward address for a node unless told it is a one-machine cluster;
# with this it binds and advertises 127.0.0.1 only (the head and every driver must agree). Token
# authentication is off by name: left unset, a token in ~/.ray (from any earlier `ray.init()`)
# turns it on for the head but not for a driver, which is then refused.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled"}


class RayHead:
    """`ray start --head --block` as a child process in its own session and temp folder; stopping
    it (SIGTERM) stops every Ray process it started, and only those."""

    def __init__(self, num_cpus: int = 2):
        # A short path: Ray's unix sockets live under it (at most 107 characters).
        self.dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = self.dir / "head.out"
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
               "--node-ip-address", "127.0.0.1", "--port", str(self.port),
               "--num-cpus", str(num_cpus), "--num-gpus", "0", "--include-dashboard=false",
               "--disable-usage-stats", "--temp-dir", str(self.dir),
               "--object-store-memory", str(100 * 2**20),
               # Ports that default to fixed numbers: free ones, so two test runs can coexist.
               "--ray-client-server-port", str(free_port()),
               "--dashboard-port", str(free_port()),
               "--dashboard-agent-listen-port", str(free_port())]
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(cmd, env={**os.environ, **LOOPBACK}, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, cwd=self.dir)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Ray runtime started" in self.log.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"`ray start --head` did not start within {timeout:g} s "
                           f"(exit code {self.process.poll()}); its output:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # --block: stops what it started
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for process in _processes_mentioning(str(self.dir)):  # anything that outlived it
            with contextlib.suppress(psutil.Error):
                process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(text in part for part in process.info["cmdline"] or []):
                found.append(process)
    return found


@pytest.fixture(scope="module")
def ray_head():
    head = RayHead(num_cpus=2)
    try:
        head.wait_ready()
    except RuntimeError as exc:
        head.stop()
        pytest.fail(f"Ray could not be started for the tests: {exc}")
    yield head
    head.stop()


@pytest.fixture
def ray_worker(ray_head, home, engine):
    """`ray_worker(*flags)` starts `python -m cnn_ablation worker --executor ray` on `home`
    against the test cluster; anything still running is killed at the end."""
    started: list[subprocess.Popen] = []
    env = {**os.environ, **LOOPBACK, "ABLATION_HOME": str(home),
           "ABLATION_HEARTBEAT_SECONDS": str(HEARTBEAT), "ABLATION_CANCEL_GRACE_SECONDS": "10",
           "PYTHONUNBUFFERED": "1"}

    def start(*flags: str) -> subprocess.Popen:
        out = open(home / f"worker-{len(started)}.out", "w")
        proc = subprocess.Popen([sys.executable, "-m", "cnn_ablation", "worker", "--executor",
                                 "ray", "--ray-address", ray_head.address, *flags],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for process in _training_processes(home):  # left by a killed worker or task
        with contextlib.suppress(psutil.Error):
            process.kill()


def _training_processes(home) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        with contextlib.suppress(psutil.Error):
            if "execute" in (process.info["cmdline"] or []) and \
                    (process.info["environ"] or {}).get("ABLATION_HOME") == str(home):
                found.append(process)
    return found


def worker_output(home) -> str:
    return "\n".join(p.read_text() for p in [*home.glob("worker-*.out"), *home.glob("logs/*.log")])


def training_pid(engine, run_id, epochs=1):
    """The run's training process (the child records its pid at attach), once `epochs` are in."""
    run = find_run(engine, run_id)
    done = len(epochs_frame(engine, [run_id]))
    return run.status == "running" and done >= epochs and run.pid


def wait_exit(proc: subprocess.Popen, home, timeout: float = 240) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker did not exit within {timeout} s:\n"
                             f"{worker_output(home)[-4000:]}") from None


# --- without a cluster: what a run asks Ray for, and the slots --------------------------------
def test_a_run_asks_for_a_gpu_share_when_the_cluster_has_gpus_else_one_cpu():
    gpus = {"CPU": 16.0, "GPU": 2.0}
    assert task_resources(gpus, runs_per_gpu=4) == {"num_gpus": 0.25, "num_cpus": 0}
    assert default_slots(gpus, task_resources(gpus, 4)) == 8  # 2 GPUs x 4
    assert task_resources(gpus, 4, gpus="none") == {"num_cpus": 1}
    cpus = {"CPU": 6.0}
    assert task_resources(cpus, 4) == {"num_cpus": 1}
    assert default_slots(cpus, task_resources(cpus, 4)) == 6
    assert [s.device for s in ray_slots(2, task_resources(gpus, 4))] == [
        "ray (0.25 GPU) slot 1/2", "ray (0.25 GPU) slot 2/2"]
    for bad in (0, 1025):
        with pytest.raises(ValueError, match="--slots"):
            ray_slots(bad, {})
    with pytest.raises(ValueError, match="--gpus: '0,1' is not allowed with --executor ray"):
        check_options("0,1", 1, None, None)


def test_no_secret_travels_in_a_task_and_the_node_keeps_its_own_database_url():
    """A task's arguments are visible to anyone who can list the cluster's tasks: the database
    password and the dashboard's password stay home; the node's own URL (with its password) is
    the one its training process uses."""
    from cnn_ablation.jobs.ray_executor import node_env

    env = {"ABLATION_DATABASE_URL": "postgresql+psycopg://ablation:s3cret@db:5432/ablation",
           "ABLATION_PASSWORD": "dashboard-secret", "ABLATION_HOME": "/data"}
    sent = passed_env(env)
    assert "s3cret" not in repr(sent) and "dashboard-secret" not in repr(sent)
    assert sent == {"ABLATION_HOME": "/data",
                    "ABLATION_DATABASE_URL": "postgresql+psycopg://ablation@db:5432/ablation"}
    node = {"ABLATION_DATABASE_URL": env["ABLATION_DATABASE_URL"], "PATH": "/usr/bin"}
    assert node_env(node, sent)["ABLATION_DATABASE_URL"] == env["ABLATION_DATABASE_URL"]
    assert node_env({"PATH": "/usr/bin"}, sent)["ABLATION_DATABASE_URL"] == \
        "postgresql+psycopg://ablation@db:5432/ablation"  # e.g. PGPASSFILE on the node
    assert passed_env({"ABLATION_DATABASE_URL": "sqlite:////data/a.db"}) == {
        "ABLATION_DATABASE_URL": "sqlite:////data/a.db"}


def test_only_our_settings_travel_to_the_node_and_cuda_is_left_to_ray():
    env = {"ABLATION_HOME": "/data", "ABLATION_DATABASE_URL": "postgresql+psycopg://db/x",
           "TF_FORCE_GPU_ALLOW_GROWTH": "true", "CUDA_VISIBLE_DEVICES": "0", "PATH": "/x",
           "HOME": "/root", "PYTHONUNBUFFERED": "1", "KERAS_BACKEND": "jax"}
    assert passed_env(env) == {"ABLATION_HOME": "/data", "PYTHONUNBUFFERED": "1",
                               "ABLATION_DATABASE_URL": "postgresql+psycopg://db/x",
                               "TF_FORCE_GPU_ALLOW_GROWTH": "true", "KERAS_BACKEND": "jax"}


def test_a_task_that_ray_lost_says_why():
    class FakeRay:
        class exceptions:  # noqa: N801 - the shape of ray.exceptions
            class RayError(Exception):
                pass

            class TaskCancelledError(RayError):
                pass

            class WorkerCrashedError(RayError):
                pass

        def __init__(self, outcome):
            self.outcome, self.cancelled = outcome, []

        def wait(self, refs, timeout):
            return (refs, []) if self.outcome is not None else ([], refs)

        def get(self, ref):
            if isinstance(self.outcome, Exception):
                raise self.outcome
            return self.outcome

        def cancel(self, ref, force):
            self.cancelled.append(force)

    assert RayTask(FakeRay(None), "ref").poll() is None
    assert RayTask(FakeRay(0), "ref").poll() == 0
    crashed = RayTask(FakeRay(FakeRay.exceptions.WorkerCrashedError("The worker died\nmore")),
                      "ref")
    assert crashed.poll() == 1
    assert crashed.lost_reason == "Ray task lost (WorkerCrashedError: The worker died)"
    ray = FakeRay(FakeRay.exceptions.TaskCancelledError(""))
    killed = RayTask(ray, "ref")
    killed.stop_after_epoch()
    killed.kill()
    assert ray.cancelled == [False, True]
    assert killed.poll() == -signal.SIGKILL and killed.lost_reason is None  # we killed it


def test_a_worker_waits_for_a_node_with_a_cpu_or_gpu_before_it_chooses_what_runs_ask_for():
    from cnn_ablation.jobs.ray_executor import wait_for_resources

    class Cluster:
        def __init__(self):
            self.views = [{"memory": 1e9}, {"memory": 1e9}, {"GPU": 2.0, "CPU": 8.0}]

        def cluster_resources(self):
            return self.views.pop(0) if len(self.views) > 1 else self.views[0]

    assert wait_for_resources(Cluster(), poll_s=0.01) == {"GPU": 2.0, "CPU": 8.0}


@pytest.mark.both_backends
def test_the_task_puts_the_node_and_device_ray_chose_on_its_run_and_on_no_other(engine):
    from cnn_ablation.jobs import ray_executor

    mine, other, queued = submit(engine, [QUICK, QUICK.with_changes(seed=1),
                                          QUICK.with_changes(seed=2)])
    assert lifecycle.claim(engine, "w-1", "head", "ray (1 CPU) slot 1/2", 5.0).id == mine
    assert lifecycle.claim(engine, "w-2", "head", "ray (1 CPU) slot 2/2", 5.0).id == other
    url = engine.url.render_as_string(hide_password=False)
    ray_executor._record_placement({"ABLATION_DATABASE_URL": url}, mine, "w-1", "node-a",
                                   "gpu:1 1/4 (ray)")
    run = find_run(engine, mine)
    assert (run.status, run.host, run.device) == ("running", "node-a", "gpu:1 1/4 (ray)")
    # Only while the run is running under that worker: not another worker's, not a queued one,
    # not one that has ended.
    assert not lifecycle.record_placement(engine, other, "w-1", "node-b", "gpu:0 (ray)")
    assert not lifecycle.record_placement(engine, queued, "w-1", "node-b", "gpu:0 (ray)")
    assert lifecycle.finish(engine, mine, "completed", worker_id="w-1")
    assert not lifecycle.record_placement(engine, mine, "w-1", "node-b", "cpu (ray)")
    placed = [find_run(engine, i) for i in (mine, other, queued)]
    assert [(r.host, r.device) for r in placed] == [
        ("node-a", "gpu:1 1/4 (ray)"), ("head", "ray (1 CPU) slot 2/2"), (None, None)]


def test_a_task_sets_its_slot_and_environment_up_as_the_local_worker_does():
    from cnn_ablation.jobs.ray_executor import task_slot
    from cnn_ablation.jobs.slots import Slot, child_env

    slot = task_slot(["1"], 4, None, totals={"1": 80000, "0": 40000})
    assert (slot.device, slot.cuda_visible_devices, slot.memory_limit_mb) == (
        "gpu:1 1/4 (ray)", "1", 20000)
    base = {"ABLATION_DATABASE_URL": "sqlite:///x.db", "ABLATION_HEARTBEAT_SECONDS": "5.0",
            "ABLATION_GPU_MEMORY_MB": "9", "PATH": "/usr/bin"}
    env = child_env(slot, None, None, base=base)  # url and beat as the worker passed them
    local = child_env(Slot("gpu:1 slot 1/4", "1", 20000, memory_total_mb=80000),
                      "sqlite:///x.db", 5.0, base=base)
    assert env == local  # one function for both executors
    assert (env["ABLATION_GPU_MEMORY_MB"], env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == (
        "20000", "0.2500")
    assert task_slot(["0"], 1, 6000, totals={"0": 24000}).memory_limit_mb == 6000
    assert task_slot(["0"], 1, None, totals={"0": 24000}).memory_limit_mb is None
    cpu = task_slot([], 4, None)
    assert cpu == Slot("cpu (ray)", "-1")
    env = child_env(cpu, None, None, base=base)
    assert env["CUDA_VISIBLE_DEVICES"] == "-1" and "ABLATION_GPU_MEMORY_MB" not in env


def test_ray_is_imported_only_by_a_ray_worker():
    code = ("import sys, cnn_ablation.cli, cnn_ablation.jobs.worker, cnn_ablation.jobs.ray_executor; "
            "from cnn_ablation.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]"


def test_a_bad_or_silent_ray_address_is_refused_at_once(cli, home):
    bad = cli("worker", "--executor", "ray", "--ray-address", "nonsense", "--once")
    assert bad.returncode == 2 and "--ray-address: 'nonsense' is not allowed; allowed: auto | " \
        "HOST:PORT" in bad.stderr
    assert not (home / "ablation.db").exists()  # refused before the database was touched
    silent = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = cli("worker", "--executor", "ray", "--ray-address", silent, "--once", timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"--ray-address: cannot connect to Ray at {silent} (nothing answers" in result.stderr
    assert time.monotonic() - started < 60
    local = cli("worker", "--slots", "3", "--once")
    assert local.returncode == 2 and "--slots: 3 is not allowed with --executor local" in \
        local.stderr


# --- a real cluster ------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_runs_complete_as_ray_tasks(engine, home, ray_worker):
    ids = submit(engine, [QUICK, QUICK.with_changes(seed=1)])
    assert wait_exit(ray_worker("--once"), home) == 0
    out = worker_output(home)
    for run_id in ids:
        run = find_run(engine, run_id)
        assert run.status == "completed", (run.error, out[-3000:])
        assert len(epochs_frame(engine, [run_id])) == 1
        assert run.environment["host"] == socket.gethostname()  # recorded by the child
        assert run.environment["keras_backend"] == "tensorflow"
        # where the task ran, recorded by the task (the claim said only "ray (1 CPU) slot i/2")
        assert (run.host, run.device) == (socket.gethostname(), "cpu (ray)")
        assert out.count(f"run {run_id}: started on ray (1 CPU)") == 1
    assert "Ray cluster: CPU=2; each run asks for num_cpus=1" in out


@pytest.mark.slow
def test_cancel_now_stops_a_ray_run_and_keeps_its_epochs(engine, home, ray_worker):
    (run_id,) = submit(engine, [LONG])
    proc = ray_worker("--once")
    wait_for(lambda: training_pid(engine, run_id), timeout=180, what="epoch 1 under Ray")
    assert lifecycle.request_cancel(engine, run_id, now=True) == "running"
    assert wait_exit(proc, home) == 0
    run = find_run(engine, run_id)
    assert run.status == "cancelled", (run.error, worker_output(home)[-3000:])
    assert len(epochs_frame(engine, [run_id])) >= 1


@pytest.mark.slow
def test_killed_training_process_or_ray_worker_process_fails_the_run_keeping_epochs(
        engine, home, ray_worker):
    child_run, task_run = submit(engine, [LONG, LONG.with_changes(seed=1)])
    proc = ray_worker("--once")  # two slots (2 CPUs): both train at once
    child_pid = wait_for(lambda: training_pid(engine, child_run), timeout=180,
                         what="epoch 1 of the first run")
    other_pid = wait_for(lambda: training_pid(engine, task_run), timeout=180,
                         what="epoch 1 of the second run")
    task_process = psutil.Process(other_pid).parent()  # the Ray worker running the task
    assert task_process is not None and task_process.pid != proc.pid
    os.kill(child_pid, signal.SIGKILL)
    task_process.kill()
    assert wait_exit(proc, home) == 0
    wait_for(lambda: not alive(other_pid), timeout=30, what="the orphaned training process to end")
    killed, lost = find_run(engine, child_run), find_run(engine, task_run)
    out = worker_output(home)[-3000:]
    assert killed.status == "failed", (killed.error, out)
    assert killed.error.startswith("worker lost: training process killed by signal SIGKILL")
    assert lost.status == "failed", (lost.error, out)
    assert lost.error.startswith("worker lost: Ray task lost (WorkerCrashedError"), lost.error
    assert lost.error.endswith("epochs are kept")
    for run_id in (child_run, task_run):
        assert len(epochs_frame(engine, [run_id])) >= 1


@pytest.mark.slow
def test_sigterm_to_a_ray_worker_requeues_its_run_with_a_checkpoint(engine, home, ray_worker):
    (run_id,) = submit(engine, [LONG])
    proc = ray_worker()
    wait_for(lambda: training_pid(engine, run_id), timeout=180, what="epoch 1 under Ray")
    proc.send_signal(signal.SIGTERM)  # stop after this epoch: ray.cancel(force=False) -> SIGTERM
    assert wait_exit(proc, home, timeout=180) == 0
    run = find_run(engine, run_id)
    assert run.status == "queued", (run.error, worker_output(home)[-3000:])
    assert run.resume_epoch >= 1 and Path(run.checkpoint_path).exists()
    assert "checkpoint saved, back in the queue" in (run.notes or "")


@pytest.mark.slow
def test_sigterm_while_a_ray_task_waits_for_a_node_puts_its_run_back_in_the_queue(
        engine, home, ray_worker):
    """Three slots on a cluster of two CPUs: the third run's task waits for a node. SIGTERM to
    the worker cancels it before it starts; its run goes back to the queue (it failed as "Ray
    task lost" before), beside the two that requeue themselves with a checkpoint."""
    ids = submit(engine, [LONG.with_changes(seed=s) for s in range(3)])
    proc = ray_worker("--slots", "3")

    def two_training_one_waiting():
        training = [i for i in ids if training_pid(engine, i)]
        waiting = [i for i in ids if i not in training
                   and (r := find_run(engine, i)).status == "running" and not r.pid]
        return len(training) == 2 and len(waiting) == 1 and (training, waiting[0])

    training, waiting = wait_for(two_training_one_waiting, timeout=240,
                                 what="two runs training and the third claimed, its task waiting")
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc, home, timeout=240) == 0
    pending = find_run(engine, waiting)
    assert pending.status == "queued", (pending.error, worker_output(home)[-3000:])
    assert "the worker stopped before its Ray task started: back in the queue" in pending.notes
    assert all(find_run(engine, i).status == "queued" for i in training)
