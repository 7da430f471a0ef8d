"""The dashboard in a real browser on the 10,000-run database: `streamlit run app.py` driven by
Playwright in Debian's Chromium (benchmarks/scale_db.py makes the database once).

Measures, and prints beside the issue's goals:
- Runs page, navigation -> table visible: clicking Runs in the top bar of an open dashboard
  and a new browser session (empty cache) opening /runs, beside a baseline: the same for a
  Streamlit page with one table and nothing of ours (median and worst of --trials; the first
  new session finds the server's caches empty; the first click waits until New run has
  settled, or not with --click-at-once);
- epoch saved -> point on screen: a live run (written through `storage.lifecycle`, as a
  training process writes: a progress beat every second, an epoch every 0.4-1.6 s) is watched
  on the Runs page; each sample is the time from `record_epoch`'s commit to the epoch's marker
  on the chart (95th percentile of --samples);
- Streamlit server memory (RSS, psutil, of the server process): idle, then with --sessions
  browser sessions on the Runs page for --hold seconds while the run trains, each showing a
  different run (the live one, and completed ones with their diagnostics opened).

    python benchmarks/dashboard_browser.py [--home DIR] [--trials 5] [--samples 30]
                                           [--sessions 10] [--hold 30] [--click-at-once]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale_db import DEFAULT_HOME, build  # noqa: E402

from tests.support import start_streamlit  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TABLE = '[data-testid="stDataFrame"]'
PAGER = re.compile(r"^Runs 1–50 of ")
POINTS_OF_FIRST_TRACE = """n => {
  const trace = document.querySelector('[data-testid="stPlotlyChart"] .scatterlayer .trace');
  return !!trace && trace.querySelectorAll('.points path').length >= n;
}"""


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    """The dashboard over `home` without a worker (the benchmark writes the live run itself)."""
    try:
        return start_streamlit(home, {**os.environ, "ABLATION_START_WORKER": "0"},
                               "streamlit-bench.log", wait_s=90)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


class LiveRun:
    """A running run written as a training process writes it: `report_progress` every second
    (from a thread), `record_epoch` when told. Cancelled and deleted at the end."""

    def __init__(self, engine, epochs_before: int = 5):
        from cnn_ablation.config import RunConfig
        from cnn_ablation.jobs.launch import new_run
        from cnn_ablation.storage import lifecycle

        self.engine, self.worker = engine, "bench-live"
        self.id = lifecycle.start_foreground(
            engine, new_run(RunConfig(dataset="cifar10", epochs=1000), name="live benchmark"),
            self.worker, socket.gethostname(), "cpu", heartbeat_interval=60.0)
        self.epoch = 0
        for _ in range(epochs_before):
            self.record()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        from cnn_ablation.storage import lifecycle

        batch = 0
        while not self._stop.wait(1.0):
            batch += 50
            lifecycle.report_progress(self.engine, self.id, self.worker, "training",
                                      self.epoch + 1, batch % 1407, 1407)

    def record(self) -> float:
        """Commit the next epoch; returns when the commit finished (perf_counter)."""
        from cnn_ablation.storage import lifecycle

        self.epoch += 1
        acc = 0.9 * (1 - math.exp(-0.1 * self.epoch))
        lifecycle.record_epoch(self.engine, self.id, self.worker, self.epoch, {
            "loss": 2.3 * (1 - acc), "accuracy": acc, "val_loss": 2.4 * (1 - acc),
            "val_accuracy": acc - 0.02}, seconds=15.0)
        return time.perf_counter()

    def end(self) -> None:
        from cnn_ablation.storage import lifecycle, runs

        self._stop.set()
        self._thread.join(timeout=5)
        lifecycle.finish(self.engine, self.id, "cancelled", error="benchmark over")
        runs.delete_run(self.engine, self.id)


def fresh_session(browser, url: str) -> float:
    """A new browser session (empty cache) opening `url`: seconds to its first table on screen."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.locator(TABLE).first.wait_for(state="visible", timeout=120_000)
    seconds = time.perf_counter() - start
    context.close()
    return seconds


def settle(page) -> None:
    """Wait until the page has settled, as a user reads a page before clicking away: no request
    for 0.5 s, then an idle moment of the browser's main thread. (The landing page loads the
    chart code while idle, cnn_ablation/ui/preload.py; a click in its first second still finds
    that work in progress and waits for it.)"""
    page.wait_for_load_state("networkidle", timeout=120_000)
    page.evaluate("() => new Promise(done => requestIdleCallback(() => done(true)))")


def navigation(browser, url: str, floor_url: str, trials: int,
               click_at_once: bool = False) -> dict[str, list[float]]:
    """Seconds from asking for the Runs page to its table on screen: `in_app`, clicking Runs in
    the top bar of an open dashboard (what a user does; the first click once New run has
    settled); `fresh`, a new browser session (empty cache) loading /runs, which adds
    Streamlit's own start in the browser (its JavaScript), and `floor`, the same for
    benchmarks/streamlit_floor.py (one table and nothing of ours: that start alone),
    interleaved with `fresh`."""
    times: dict[str, list[float]] = {"in_app": [], "fresh": [], "floor": []}
    for i in range(trials):
        for name in (("fresh", "floor") if i % 2 == 0 else ("floor", "fresh")):
            times[name].append(fresh_session(browser, f"{url}/runs" if name == "fresh"
                                             else floor_url))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url)
    page.get_by_role("heading", name="New run").wait_for(timeout=120_000)
    if not click_at_once:
        settle(page)
    for _ in range(trials):
        start = time.perf_counter()
        page.get_by_role("link", name="Runs").click()
        # New run has a table of its own (the model summary): the Runs table is the one above
        # the pager's caption, drawn with it
        page.get_by_text(PAGER).wait_for(state="visible", timeout=120_000)
        page.locator(TABLE).first.wait_for(state="visible", timeout=120_000)
        times["in_app"].append(time.perf_counter() - start)
        page.get_by_role("link", name="New run").click()
        page.get_by_role("heading", name="New run").wait_for(timeout=120_000)
        page.get_by_text(PAGER).wait_for(state="detached", timeout=120_000)
    context.close()
    return times


def epoch_to_point(browser, url: str, live: LiveRun, samples: int) -> list[float]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{url}/runs?run={live.id}", wait_until="commit")
    page.wait_for_function(POINTS_OF_FIRST_TRACE, arg=live.epoch, timeout=120_000, polling=25)
    rng = random.Random(1)
    times = []
    for _ in range(samples):
        time.sleep(rng.uniform(0.4, 1.6))  # epochs land at any moment of the page's 1 s poll
        saved = live.record()
        page.wait_for_function(POINTS_OF_FIRST_TRACE, arg=live.epoch, timeout=60_000,
                               polling=25)
        times.append(time.perf_counter() - saved)
    context.close()
    return times


def memory(browser, url: str, live: LiveRun, pid: int, sessions: int,
           hold: float) -> dict:
    """Server RSS with `sessions` browser sessions on the Runs page while a run trains (so every
    session's table refreshes), each showing a different run: the live run, and completed runs
    with their curves and their diagnostics opened, per-layer norms and confusion matrices (the
    most data sessions can make the server hold). Also the server's CPU time per session-second
    meanwhile. The browser runs on the same 2 cores as the server, so the sessions are opened
    one after another."""
    import psutil

    server = psutil.Process(pid)
    contexts, opened = [], []
    shown = [live.id, *range(10_000, 10_000 - sessions + 1, -1)][:sessions]
    for run_id in shown:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        start = time.perf_counter()
        page.goto(f"{url}/runs?run={run_id}", wait_until="commit")
        page.get_by_text(PAGER).wait_for(state="visible", timeout=300_000)
        page.locator(TABLE).first.wait_for(state="visible", timeout=300_000)
        if run_id != live.id:  # its per-layer norms and confusion matrix, the most it can show
            page.get_by_text("Diagnostics:").click()
            page.locator('[data-testid="stPlotlyChart"]').nth(2).wait_for(timeout=300_000)
        opened.append(time.perf_counter() - start)
        contexts.append(context)
    samples = []
    cpu_before, wall_before = sum(server.cpu_times()[:2]), time.monotonic()
    deadline = time.monotonic() + hold
    next_epoch = time.monotonic() + 3
    while time.monotonic() < deadline:
        if time.monotonic() > next_epoch:  # the run goes on
            live.record()
            next_epoch = time.monotonic() + 3
        samples.append(rss_mb(pid))
        time.sleep(0.5)
    cpu = sum(server.cpu_times()[:2]) - cpu_before
    wall = time.monotonic() - wall_before
    for context in contexts:
        context.close()
    return {"peak_mb": max(samples), "last_mb": samples[-1],
            "cpu_per_session_s": cpu / wall / sessions, "opened_s": opened}


def measure(home: Path, trials: int = 5, samples: int = 30, sessions: int = 10,
            hold: float = 30.0, click_at_once: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    from cnn_ablation.storage.engine import get_engine

    build(home, quiet=True)
    engine = get_engine(f"sqlite:///{home / 'ablation.db'}")
    server, url = start_server(home)
    live = floor = None
    try:
        floor, floor_url = start_streamlit(home, dict(os.environ), "streamlit-floor.log",
                                           wait_s=90, script="benchmarks/streamlit_floor.py")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            idle_before = rss_mb(server.pid)
            load_before = os.getloadavg()
            nav = navigation(browser, url, floor_url, trials, click_at_once)
            live = LiveRun(engine)
            points = epoch_to_point(browser, url, live, samples)
            mem = memory(browser, url, live, server.pid, sessions, hold)
            mem["idle_mb"] = idle_before
            load_after = os.getloadavg()
            browser.close()
    finally:
        if live is not None:
            live.end()
        for process in (server, floor):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    return {"navigation_s": nav, "epoch_to_point_s": points, "memory": mem,
            "sessions": sessions, "load": [load_before, load_after]}


def rows(result: dict) -> list[tuple[str, str, str, bool | None]]:
    """(what, measured, goal, met) for the table; met is None for the baseline, which has no
    goal: it measures Streamlit's own start in a new session (its JavaScript, its websocket),
    the floor under the new-session row."""
    nav, pts, mem = result["navigation_s"], result["epoch_to_point_s"], result["memory"]
    in_app, fresh, floor = nav["in_app"], nav["fresh"], nav["floor"]
    return [
        ("Runs page in Chromium, navigation -> table visible (top bar click)",
         f"median {statistics.median(in_app):.2f} s, worst {max(in_app):.2f} s "
         f"(n={len(in_app)}; the session's first visit {in_app[0]:.2f} s)", "<= 1.5 s",
         max(in_app) <= 1.5),
        ("Runs page in Chromium, new browser session -> table visible",
         f"median {statistics.median(fresh):.2f} s, worst {max(fresh):.2f} s (first, server "
         f"cold, {fresh[0]:.2f} s; n={len(fresh)}): "
         f"+{statistics.median(fresh) - statistics.median(floor):.2f} s over the baseline",
         "<= 1.5 s", max(fresh) <= 1.5),
        ("  baseline: Streamlit alone (one table, nothing of ours), new session",
         f"median {statistics.median(floor):.2f} s, worst {max(floor):.2f} s (n={len(floor)})",
         "", None),
        ("epoch saved -> point on screen (live run, Chromium)",
         f"p95 {p95(pts):.2f} s, median {statistics.median(pts):.2f} s, worst {max(pts):.2f} s "
         f"(n={len(pts)})", "<= 1.5 s at p95", p95(pts) <= 1.5),
        (f"Streamlit server memory, {result['sessions']} sessions on the Runs page (a run "
         "training)",
         f"{mem['idle_mb']:.0f} MB idle -> peak {mem['peak_mb']:.0f} MB (server CPU "
         f"{1000 * mem['cpu_per_session_s']:.0f} ms per session-second)", "<= 300 MB",
         mem["peak_mb"] <= 300),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="print the raw measurements")
    parser.add_argument("--click-at-once", action="store_true",
                        help="click Runs as soon as New run's heading shows, not once it settled")
    args = parser.parse_args()
    result = measure(args.home, args.trials, args.samples, args.sessions, args.hold,
                     args.click_at_once)
    if args.json:
        print(json.dumps(result))
        return
    load = result["load"]
    print(f"load average (1, 5, 15 min) before {load[0][0]:.1f} {load[0][1]:.1f} "
          f"{load[0][2]:.1f}, after {load[1][0]:.1f} {load[1][1]:.1f} {load[1][2]:.1f}")
    for what, measured, goal, met in rows(result):
        mark = "" if met is None else "ok" if met else "MISSED"
        print(f"{what:58s} {measured:62s} {goal:18s} {mark}")


if __name__ == "__main__":
    main()
