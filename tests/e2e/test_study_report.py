"""End to end: a small study trained by the real worker (`synthetic` data, 1 epoch), then the
Studies page in Debian's Chromium (Playwright), its report files downloaded and read."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import ROOT

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.e2e


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(home: Path, *args: str, timeout: float = 600) -> str:
    env = {**os.environ, "ABLATION_HOME": str(home), "ABLATION_HEARTBEAT_SECONDS": "1"}
    env.pop("ABLATION_DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-m", "cnn_ablation", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


@pytest.fixture
def dashboard(tmp_path):
    """A finished study (2 cells x 2 seeds, trained by `worker --once`), then the dashboard on
    it (no worker of its own: there is nothing left to train)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `apt-get install chromium` (.ci/run does)")
    created = run_cli(tmp_path, "study", "create", "--dataset", "synthetic:100", "--epochs", "1",
                      "--batch-size", "16", "--factor", "bn_conv_2", "--seeds", "2",
                      "--name", "e2e report")
    assert "queued 4 runs" in created
    run_cli(tmp_path, "worker", "--once", "--gpus", "none")
    port = free_port()
    env = {**os.environ, "ABLATION_HOME": str(tmp_path), "ABLATION_START_WORKER": "0",
           "PYTHONUNBUFFERED": "1"}
    env.pop("ABLATION_DATABASE_URL", None)
    log = open(tmp_path / "streamlit.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise AssertionError((tmp_path / "streamlit.log").read_text()) from None
            time.sleep(0.3)
    yield url, tmp_path
    server.terminate()
    server.wait(timeout=30)


def download(page, button: str) -> bytes:
    with page.expect_download(timeout=60_000) as info:
        page.get_by_role("button", name=button).click()
    return Path(info.value.path()).read_bytes()


def test_the_studies_page_downloads_the_report_of_a_finished_study(dashboard):
    url, _ = dashboard
    expect = playwright.expect
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1440, "height": 900}, accept_downloads=True)
        page.goto(url)
        page.get_by_role("link", name="Studies").click()
        expect(page.get_by_role("heading", name="Studies")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("complete: 4 of 4 runs")).to_be_visible(timeout=30_000)
        expect(page.get_by_role("button", name="Report (Markdown)")).to_be_visible()

        markdown = download(page, "Report (Markdown)").decode()
        assert markdown.startswith("# Study 1: e2e report")
        assert "complete: 4 of 4 runs" in markdown
        assert "| bn_conv_2=off | " in markdown and "| base |" in markdown
        assert "## Verdict" in markdown and "Provisional" not in markdown
        latex = download(page, "Table (LaTeX)").decode()
        assert r"\begin{tabular}{lrrcr}" in latex and r"bn\_conv\_2=off" in latex
        png = download(page, "Forest plot (PNG)")
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        svg = download(page, "Forest plot (SVG)").decode()
        assert "<svg" in svg and "bn_conv_2 (on → off)" in svg
        browser.close()
