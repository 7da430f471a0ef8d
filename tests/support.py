"""Plain helpers the tests share (fixtures are in conftest.py)."""

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT = 1.0  # workers started by tests beat every second: liveness is exercised quickly
TEST_WORKER = "test-worker"  # the owner of the runs make_run starts (no process behind it)


def wait_for(predicate, timeout=120.0, what="condition"):
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def running_with_epochs(engine, run_id: int, n: int = 1):
    """The pid of the run's training process once the run is running with `n` epochs saved
    (falsy until then): what a test waits for before it interrupts a run."""
    from cnn_ablation.storage.curves import epochs_frame
    from cnn_ablation.storage.runs import find_run

    run = find_run(engine, run_id)
    return run.status == "running" and len(epochs_frame(engine, [run_id])) >= n and run.pid


def requeued_by_sigterm(engine, workers) -> tuple[int, int]:
    """A 4-epoch run on a worker (the `workers` fixture) that gets SIGTERM once epoch 1 is
    saved: the worker exits 0 and the run is queued again, to resume after the epochs it kept.
    Returns (run id, epochs kept)."""
    import signal

    from cnn_ablation.config import RunConfig
    from cnn_ablation.jobs.launch import submit
    from cnn_ablation.storage.curves import epochs_frame
    from cnn_ablation.storage.runs import find_run

    (run_id,) = submit(engine, [RunConfig(dataset="synthetic:2000", epochs=4, val_split=0.0)])
    worker = workers()
    wait_for(lambda: running_with_epochs(engine, run_id), what="epoch 1")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=180) == 0
    run = find_run(engine, run_id)
    done = len(epochs_frame(engine, [run_id]))
    assert run.status == "queued" and run.resume_epoch == done and 1 <= done < 4
    return run_id, done


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie counts as gone)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_streamlit(home: Path, env: dict[str, str], log_name: str = "streamlit.log",
                    wait_s: float = 120.0, script: str = "cnn_ablation/ui/server.py",
                    database_url: str | None = None):
    """`streamlit run cnn_ablation/ui/server.py` (what `make run` serves; or `script`) on a free
    port of 127.0.0.1 over `home` (with `env`, SQLite: ABLATION_DATABASE_URL is dropped, unless
    `database_url` is given); returns (process, url) once its health check answers.
    RuntimeError with the server's log if it exits or does not answer within `wait_s`. Shared
    by the browser tests and benchmarks/dashboard_browser.py."""
    import subprocess
    import sys

    env = {**env, "ABLATION_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("ABLATION_DATABASE_URL", None)
    if database_url:  # another database than home's SQLite file (a benchmark's PostgreSQL)
        env["ABLATION_DATABASE_URL"] = database_url
    port = free_port()
    log_path = home / log_name
    with open(log_path, "w") as log:  # the child keeps its own handle
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port),
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(server, f"{url}/_stcore/health", log_path, wait_s)
    return server, url


def wait_until_healthy(server, health_url: str, log_path: Path, wait_s: float) -> None:
    """Return once `health_url` answers 200; RuntimeError with the end of the server's log if
    `server` exits or it does not answer within `wait_s` (the server is killed then)."""
    import urllib.request

    deadline = time.monotonic() + wait_s
    while True:
        try:
            if urllib.request.urlopen(health_url, timeout=2).status == 200:
                return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(log_path.read_text()[-3000:]) from None
            time.sleep(0.3)
