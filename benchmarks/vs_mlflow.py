"""This dashboard beside MLflow's on the same runs, in the same browser, interleaved (issue 24).

Makes this project's database (benchmarks/scale_db.py: 10,000 completed runs x 50 epochs by
default), installs MLflow from the package registry into a throwaway virtualenv (never a
dependency of this project), copies the same runs into MLflow's SQLite store through MLflow's own
client (benchmarks/mlflow_fill.py: params, the four curves as metrics with one step per epoch,
test accuracy, times, status), starts both servers on 127.0.0.1 as a user would
(`cnn-ablation dashboard`'s server without a worker; `mlflow server` with its defaults), and
measures in Debian's Chromium, each trial a new browser context (an empty cache: a pasted link,
a new tab), the two sides taking turns and the order swapped every trial, each once both servers
have gone quiet (MLflow's metric page goes on working after its lines are drawn):

- **Runs table, new session → rows drawn**: our /runs until the table's rows are drawn (the
  grid's cells, written in the same frame as its canvas) against MLflow's experiment page
  (/#/experiments/ID/runs) until its rows are drawn (the name of a run in the first screen);
- **50 runs' curves, new session**: our Compare with 50 runs (/compare?runs=..., four metrics:
  200 lines) until every line is drawn, against MLflow's metric page for the same 50 runs, with
  one metric (50 lines) and with the four (200);
- **Studies' effects table, new session** (ours only: MLflow has no studies): /studies?study=1
  (the largest study, 480 runs) until the effects table's rows are drawn;
- **Streamlit alone** (benchmarks/streamlit_floor.py, one table and nothing of ours): Streamlit's
  own start in a new session, the floor under our rows;
- **server memory with 10 sessions** on the runs table (resident memory, psutil: our server
  process; MLflow's largest worker and its whole process tree);
- **every run listed by a program**: `python -m cnn_ablation runs --all` (a new process) against
  MLflow's REST search (`runs/search`, max_results 10,000 a page, every page).

Prints medians with min–max and the ratio per trial pair (ours / MLflow's, below 1: ours is
faster), and the load average before and after: the machine is shared, quote it with the figures.

    python benchmarks/vs_mlflow.py [--runs 10000] [--trials 7] [--work /dev/shm/vs-mlflow]
                                   [--mlflow-version 3.17.2] [--only runs,curves,studies,...]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dashboard_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from scale_db import build  # noqa: E402

from tests.support import free_port, start_streamlit, wait_until_healthy  # noqa: E402

MLFLOW_VERSION = "3.17.2"
DEFAULT_WORK = Path("/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()) \
    / "vs-mlflow"
PARTS = ("runs", "curves", "studies", "floor", "memory", "list")
VIEWPORT = {"width": 1400, "height": 1000}
OUR_ROWS = """([first, n]) => {
  const cells = [...document.querySelectorAll('[data-testid="stDataFrame"] [role="gridcell"]')];
  return cells.length >= n && cells.some(c => c.textContent.trim() === first);
}"""
TRACES = """n => [...document.querySelectorAll('.js-plotly-plot')].every(
  p => p.querySelectorAll('.scatterlayer .trace').length >= n)
  && document.querySelectorAll('.js-plotly-plot').length > 0"""


# --- MLflow, in its own virtualenv -----------------------------------------------------------

def mlflow_python(venv: Path, version: str) -> Path:
    """The Python of a virtualenv with mlflow==`version` (made and installed when missing)."""
    python = venv / "bin" / "python"
    if python.exists():
        have = subprocess.run([python, "-c", "import mlflow; print(mlflow.__version__)"],
                              capture_output=True, text=True)
        if have.returncode == 0 and have.stdout.strip() == version:
            return python
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", f"mlflow=={version}"], check=True)
    print(f"  mlflow {version} installed in {venv} ({time.perf_counter() - started:.0f} s)",
          flush=True)
    return python


def mlflow_runs(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(store) as conn:
            return conn.execute("SELECT count(*) FROM runs r JOIN experiments e ON "
                                "r.experiment_id = e.experiment_id WHERE e.name = "
                                "'cnn-ablation'").fetchone()[0]
    except sqlite3.Error:
        return 0


def fill_mlflow(python: Path, ours: Path, store: Path, n_runs: int) -> None:
    if mlflow_runs(store) == n_runs:
        return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    store.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run([python, str(ROOT / "benchmarks" / "mlflow_fill.py"), str(ours),
                    f"sqlite:///{store}"], check=True, cwd=store.parent)
    print(f"  MLflow store filled: {store} ({store.stat().st_size / 1e6:.0f} MB, "
          f"{time.perf_counter() - started:.0f} s)", flush=True)


def mlflow_ids(store: Path, ours: list[int]) -> tuple[str, dict[int, str]]:
    """MLflow's experiment id and its run ids for our run ids (the fill tags each run)."""
    with sqlite3.connect(store) as conn:
        experiment = conn.execute("SELECT experiment_id FROM experiments WHERE name = "
                                  "'cnn-ablation'").fetchone()[0]
        marks = ",".join("?" * len(ours))
        pairs = conn.execute(f"SELECT value, run_uuid FROM tags WHERE key = "
                             f"'cnn_ablation.run_id' AND value IN ({marks})",
                             [str(i) for i in ours]).fetchall()
    return str(experiment), {int(v): u for v, u in pairs}


def start_mlflow(venv: Path, store: Path, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(work / "mlflow-server.log", "w")  # noqa: SIM115 - the child keeps it
    server = subprocess.Popen(
        [str(venv / "bin" / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{store}",
         "--artifacts-destination", str(work / "mlartifacts"), "--host", "127.0.0.1",
         "--port", str(port)], cwd=work, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(server, f"{url}/health", work / "mlflow-server.log", 180)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    return server, url


# --- one measurement each --------------------------------------------------------------------

def timed_page(browser, url: str, wait) -> float:
    """A new browser context (empty cache) opening `url`: seconds until `wait(page)` returns."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    wait(page)
    seconds = time.perf_counter() - start
    context.close()
    return seconds


def settle(pids: list[int], quiet: float = 0.15, longest: float = 15.0) -> None:
    """Wait until the servers (`pids` and their children) use less than `quiet` of a core
    over half a second (at most `longest` s): a page that goes on working after it is drawn
    (MLflow's metric page fetching histories) must not land in the next side's trial."""
    import psutil

    processes = []
    for pid in pids:
        root = psutil.Process(pid)
        processes += [root, *root.children(recursive=True)]
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        before = sum(sum(p.cpu_times()[:2]) for p in processes if p.is_running())
        time.sleep(0.5)
        if sum(sum(p.cpu_times()[:2]) for p in processes if p.is_running()) - before \
                < quiet * 0.5:
            return


def our_rows(first_id: int, cells: int = 50):
    def wait(page):
        page.wait_for_function(OUR_ROWS, arg=[str(first_id), cells], timeout=120_000,
                               polling=20)
    return wait


def mlflow_rows(name: str):
    def wait(page):
        page.get_by_role("link", name=name, exact=True).first.wait_for(timeout=120_000)
    return wait


def traces(n: int, charts: int = 1):
    def wait(page):
        page.wait_for_function(f"() => document.querySelectorAll('.js-plotly-plot').length >= "
                               f"{charts} && ({TRACES})({n})", timeout=180_000, polling=50)
    return wait


def tree_rss_mb(pid: int) -> tuple[float, float]:
    """(largest process, whole tree) resident memory of `pid` and its children, in MB."""
    import psutil

    root = psutil.Process(pid)
    sizes = [p.memory_info().rss / 2**20 for p in [root, *root.children(recursive=True)]]
    return max(sizes), sum(sizes)


def sessions_memory(browser, page_url: str, wait, pid: int, sessions: int) -> dict:
    contexts = []
    before = tree_rss_mb(pid)
    for _ in range(sessions):
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.goto(page_url, wait_until="commit")
        wait(page)
        contexts.append(context)
    peak = max_tree = 0.0
    for _ in range(10):  # a few seconds with every session open
        largest, tree = tree_rss_mb(pid)
        peak, max_tree = max(peak, largest), max(max_tree, tree)
        time.sleep(0.5)
    for context in contexts:
        context.close()
    return {"idle_largest": before[0], "idle_tree": before[1], "largest": peak,
            "tree": max_tree}


def list_ours(home: Path) -> tuple[float, int]:
    env = {**os.environ, "ABLATION_HOME": str(home)}
    env.pop("ABLATION_DATABASE_URL", None)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cnn_ablation", "runs", "--all"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    return time.perf_counter() - start, len(out.stdout.splitlines()) - 1


def list_mlflow(url: str, experiment: str) -> tuple[float, int]:
    start = time.perf_counter()
    listed, token = 0, None
    while True:
        body = {"experiment_ids": [experiment], "max_results": 10_000}
        if token:
            body["page_token"] = token
        request = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search",
                                         data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=600).read())
        listed += len(answer.get("runs", []))
        token = answer.get("next_page_token")
        if not token:
            return time.perf_counter() - start, listed


# --- the comparison --------------------------------------------------------------------------

def spread(values: list[float], unit: str = " s", digits: int = 2) -> str:
    return (f"{statistics.median(values):.{digits}f}{unit} "
            f"({min(values):.{digits}f}–{max(values):.{digits}f})")


def measure(args) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    from playwright.sync_api import sync_playwright

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    home = work / "ours"
    ours_db = build(home, args.runs, quiet=False)
    venv = args.venv or work / "mlflow-venv"
    python = mlflow_python(venv, args.mlflow_version)
    store = work / "mlflow" / "mlflow.db"
    fill_mlflow(python, ours_db, store, args.runs)
    with sqlite3.connect(ours_db) as conn:
        newest = [r[0] for r in conn.execute(
            "SELECT id FROM runs ORDER BY id DESC LIMIT 50").fetchall()][::-1]
        unnamed = conn.execute("SELECT max(id) FROM runs WHERE name = ''").fetchone()[0]
    experiment, uuids = mlflow_ids(store, newest)
    if len(uuids) != len(newest):
        raise SystemExit("the MLflow store does not hold the newest runs: delete it and rerun")
    parts = set(args.only.split(",")) if args.only else set(PARTS)

    ours, our_url = start_streamlit(home, {**os.environ, "ABLATION_START_WORKER": "0"},
                                    "streamlit-vs.log", wait_s=120)
    floor = mlflow = None
    results: dict[str, list[float]] = {}
    notes: list[str] = []
    try:
        mlflow, mlflow_url = start_mlflow(venv, store, work)
        if "floor" in parts:
            floor, floor_url = start_streamlit(home, dict(os.environ), "streamlit-floor.log",
                                               wait_s=120, script="benchmarks/streamlit_floor.py")
        runs_param = ",".join(map(str, newest))
        uuid_list = json.dumps([uuids[i] for i in newest], separators=(",", ":"))

        def metric_url(keys: list[str]) -> str:
            """MLflow's metric page for the 50 runs, as its own links write it
            (Routes.getMetricPageRoute: JSON in the query)."""
            quoted = urllib.parse.quote
            return (f"{mlflow_url}/#/metric/?runs={uuid_list}&metric="
                    f"{quoted(json.dumps(keys[0]))}&experiments={json.dumps([experiment])}"
                    f"&plot_metric_keys={quoted(json.dumps(keys))}&plot_layout={{}}"
                    "&x_axis=step&y_axis_scale=linear&line_smoothness=1&show_point=false"
                    "&deselected_curves=[]&last_linear_y_axis_range=[]")

        trials = {
            "runs": [("ours", f"{our_url}/runs", our_rows(newest[-1])),
                     ("mlflow", f"{mlflow_url}/#/experiments/{experiment}/runs",
                      mlflow_rows(f"run-{unnamed}"))],
            "curves": [("ours", f"{our_url}/compare?runs={runs_param}", traces(200)),
                       ("mlflow1", metric_url(["val_accuracy"]), traces(50)),
                       ("mlflow4", metric_url(["loss", "accuracy", "val_loss", "val_accuracy"]),
                        traces(200))],
            "studies": [("ours", f"{our_url}/studies?study=1", study_rows)],
        }
        if floor is not None:
            trials["floor"] = [("ours", floor_url, floor_rows)]
        servers = [p.pid for p in (ours, mlflow, floor) if p is not None]
        load_before = os.getloadavg()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            # one warm-up of each page (the servers' caches and lazy imports, as any server
            # that has had a visitor), not counted
            for part, sides in trials.items():
                if part in parts:
                    for _, page_url, wait in sides:
                        timed_page(browser, page_url, wait)
            for i in range(args.trials):
                for part, sides in trials.items():
                    if part not in parts:
                        continue
                    for name, page_url, wait in (sides if i % 2 == 0 else sides[::-1]):
                        settle(servers)
                        results.setdefault(f"{part}:{name}", []).append(
                            timed_page(browser, page_url, wait))
                print(f"  trial {i + 1}/{args.trials}: " + ", ".join(
                    f"{k} {v[-1]:.2f}" for k, v in results.items()), flush=True)
            if "memory" in parts:
                results["memory:ours"] = [*sessions_memory(
                    browser, f"{our_url}/runs", our_rows(newest[-1]), ours.pid,
                    args.sessions).values()]
                results["memory:mlflow"] = [*sessions_memory(
                    browser, f"{mlflow_url}/#/experiments/{experiment}/runs",
                    mlflow_rows(f"run-{unnamed}"), mlflow.pid, args.sessions).values()]
            browser.close()
        if "list" in parts:
            for i in range(args.trials):
                for name in (("ours", "mlflow") if i % 2 == 0 else ("mlflow", "ours")):
                    seconds, listed = (list_ours(home) if name == "ours"
                                       else list_mlflow(mlflow_url, experiment))
                    results.setdefault(f"list:{name}", []).append(seconds)
                    results.setdefault(f"listed:{name}", []).append(listed)
        load_after = os.getloadavg()
    finally:
        for process in (ours, floor, mlflow):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    notes.append(f"load average (1, 5, 15 min) before {' '.join(f'{x:.1f}' for x in load_before)}"
                 f", after {' '.join(f'{x:.1f}' for x in load_after)} ({os.cpu_count()} CPUs); "
                 f"{args.runs:,} runs x 50 epochs; MLflow {args.mlflow_version}; "
                 f"{args.trials} interleaved trials")
    return table(results), notes


def study_rows(page) -> None:
    # the effects table: the first table after the "Effects: ..." heading, its cells drawn
    page.wait_for_function(
        """() => {
          const parts = [...document.querySelectorAll('h3, [data-testid="stDataFrame"]')];
          const heading = parts.findIndex(e => e.tagName === 'H3'
                                              && e.textContent.startsWith('Effects'));
          const table = heading < 0 ? null : parts.slice(heading + 1).find(
            e => e.tagName !== 'H3');
          return !!table && table.querySelectorAll('[role="gridcell"]').length > 0;
        }""", timeout=120_000, polling=20)


def floor_rows(page) -> None:
    page.wait_for_function("""() => document.querySelectorAll(
        '[data-testid="stDataFrame"] [role="gridcell"]').length >= 50""", timeout=120_000,
                           polling=20)


def ratio_text(ours: list[float], theirs: list[float]) -> tuple[str, float]:
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return spread(ratios, unit="", digits=2), statistics.median(ratios)


def table(results: dict[str, list[float]]) -> list[tuple[str, str, str, str]]:
    rows = []
    if "runs:ours" in results:
        text, median = ratio_text(results["runs:ours"], results["runs:mlflow"])
        rows.append(("Runs table, new session → rows drawn", spread(results["runs:ours"]),
                     spread(results["runs:mlflow"]),
                     f"**{text}**: {'ahead' if median <= 0.8 else 'behind'} (goal ≤ 0.8)"))
    if "curves:ours" in results:
        one, _ = ratio_text(results["curves:ours"], results["curves:mlflow1"])
        four, _ = ratio_text(results["curves:ours"], results["curves:mlflow4"])
        rows.append(("50 runs' curves, new session", f"{spread(results['curves:ours'])} "
                     "(4 metrics)", f"{spread(results['curves:mlflow1'])} (1 metric), "
                     f"{spread(results['curves:mlflow4'])} (4)", f"{one} / {four}"))
    if "studies:ours" in results:
        median = statistics.median(results["studies:ours"])
        rows.append(("Studies: effects table, new session (480 runs)",
                     spread(results["studies:ours"]), "no studies",
                     f"goal ≤ 2.0 s: {'met' if median <= 2.0 else '**missed**'}"))
    if "floor:ours" in results:
        rows.append(("  Streamlit alone (one table, nothing of ours), new session",
                     spread(results["floor:ours"]), "", "the floor under our rows"))
    if "memory:ours" in results:
        ours, theirs = results["memory:ours"], results["memory:mlflow"]
        rows.append((f"server memory, {SESSIONS} sessions on the runs table",
                     f"{ours[2]:.0f} MB (before them {ours[0]:.0f})",
                     f"{theirs[2]:.0f} MB largest worker, {theirs[3]:.0f} MB whole tree "
                     f"(before them {theirs[1]:.0f})",
                     f"{ours[2] / theirs[2]:.2f} / {ours[2] / theirs[3]:.2f}"))
    if "list:ours" in results:
        text, _ = ratio_text(results["list:ours"], results["list:mlflow"])
        rows.append((f"every run listed by a program ({results['listed:ours'][0]:,.0f} / "
                     f"{results['listed:mlflow'][0]:,.0f})",
                     f"{spread(results['list:ours'])} (`python -m cnn_ablation runs --all`, "
                     "a new process)", f"{spread(results['list:mlflow'])} (REST runs/search)",
                     text))
    return rows


SESSIONS = 10


def main() -> None:
    global SESSIONS
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK,
                        help="our database, MLflow's store and MLflow's virtualenv (kept: "
                             "a rerun reuses them)")
    parser.add_argument("--venv", type=Path, help="MLflow's virtualenv (default WORK/mlflow-venv)")
    parser.add_argument("--mlflow-version", default=MLFLOW_VERSION)
    parser.add_argument("--only", help=f"comma-separated parts of {','.join(PARTS)}")
    args = parser.parse_args()
    SESSIONS = args.sessions
    rows, notes = measure(args)
    print()
    for note in notes:
        print(note)
    print("\n| what | cnn-ablation | MLflow | ratio (ours / MLflow, per trial) |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
