"""What every browser test needs: a real `streamlit run app.py` on 127.0.0.1 (with or without
the worker the app starts), Debian's Chromium through Playwright, and the CLI on the same home.

Fixtures and helpers here are shared by every file under tests/e2e/; put a new page's test in a
file of its own and reuse them."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, start_streamlit

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def run_cli(home: Path, *args: str, timeout: float = 600) -> str:
    """`python -m cnn_ablation ARGS` on `home` (SQLite); fails the test on a non-zero exit."""
    env = {**os.environ, "ABLATION_HOME": str(home), "ABLATION_HEARTBEAT_SECONDS": "1"}
    env.pop("ABLATION_DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-m", "cnn_ablation", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


@contextlib.contextmanager
def streamlit_server(home: Path, *, start_worker: bool) -> Iterator[str]:
    """The dashboard on a free port of 127.0.0.1 over `home`; yields its URL. With
    `start_worker` the app starts its own (detached) worker, stopped here at the end."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `apt-get install chromium` (.ci/run does)")
    env = {**os.environ, "ABLATION_HEARTBEAT_SECONDS": "1",
           "ABLATION_START_WORKER": "1" if start_worker else "0"}
    server, url = start_streamlit(home, env)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        if start_worker:
            # The worker the app started is detached on purpose (it outlives the app).
            from cnn_ablation.storage.engine import get_engine
            from cnn_ablation.storage.workers import live_workers

            for _, worker in live_workers(get_engine(f"sqlite:///{home}/ablation.db"),
                                          60).iterrows():
                if worker["pid"]:
                    subprocess.run(["kill", "-TERM", str(int(worker["pid"]))], check=False)
        if (home / "logs").exists():
            shutil.copytree(home / "logs", ARTIFACTS / "logs", dirs_exist_ok=True)


@pytest.fixture
def dashboard(tmp_path):
    """The dashboard with its own worker on a fresh home: yields (url, home)."""
    with streamlit_server(tmp_path, start_worker=True) as url:
        yield url, tmp_path


@pytest.fixture
def idle_dashboard(tmp_path):
    """The dashboard without a worker on a fresh home (fill it with `run_cli` first, or from
    the test): yields (url, home)."""
    with streamlit_server(tmp_path, start_worker=False) as url:
        yield url, tmp_path


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session; give each test its own context."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `apt-get install chromium` (.ci/run does)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()



@pytest.fixture
def two_runs(tmp_path):
    """A home with two finished synthetic runs (2 epochs each), then the dashboard over it:
    yields (url, home)."""
    for bn in ("1,1,1,1,1", "1,0,0,0,1"):
        run_cli(tmp_path, "submit", "--dataset", "synthetic:100", "--epochs", "2", "--bn", bn)
    run_cli(tmp_path, "worker", "--once", "--gpus", "none")  # drains the queue
    with streamlit_server(tmp_path, start_worker=False) as url:
        yield url, tmp_path
