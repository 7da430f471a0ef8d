"""The dashboard and the CLI on a database of 10,000 completed runs x 50 epochs (issue 11).

Makes the database once (benchmarks/scale_db.py: the project's own functions and tables),
then measures, each in fresh processes so that nothing is warm that a user would find cold:
- each page's server render through Streamlit's AppTest: Runs (default and sorted by best
  validation accuracy), Compare with 50 runs selected, Studies with its largest study. The first
  render of a page in a new process is "cold" (empty caches, modules imported by the page); the
  renders after it are "warm" (what every later visitor and every refresh costs);
- the CLI: `runs`, `show ID`, `cancel ID` (on a completed run: changes nothing), `submit` and
  `delete`, each a new `python -m cnn_ablation` process (wall time), and which of TensorFlow,
  pandas and Plotly each one imported (`python -X importtime`);
- with --browser, the Chromium rows from benchmarks/dashboard_browser.py.

Prints a table with the issue's goals beside the measurements, and the load average before and
after (the machine is shared: note it beside any figure you quote).

    python benchmarks/dashboard_scale.py [--home DIR] [--repeats 3] [--browser]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale_db import DEFAULT_HOME, build  # noqa: E402

# One page in a fresh interpreter: the first render (cold), then `warm` more; JSON on stdout.
PAGE_PROBE = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
from streamlit.testing.v1 import AppTest
page, setup, warm = {page!r}, {setup!r}, {warm}
at = AppTest.from_file(os.path.join({root!r}, "app.py"), default_timeout=600)
at.run()
def render():
    start = time.perf_counter()
    if setup == "compare50":
        at.multiselect(key="compare_ids").set_value(list(range(9951, 10001))).run()
    elif setup == "best":
        at.selectbox(key="runs_sort").set_value("best val acc").run()
    elif setup == "largest_study":
        at.session_state["study_choice"] = 1
        at.run()
    else:
        at.run()
    return time.perf_counter() - start
start = time.perf_counter()
at.switch_page(page).run()
first_switch = time.perf_counter() - start
cold = render() if setup else first_switch
times = [render() for _ in range(warm)]
assert not at.exception, at.exception
print(json.dumps({{"cold": cold, "warm": times}}))
"""


def page_times(home: Path, page: str, setup: str = "", warm: int = 3) -> dict:
    code = PAGE_PROBE.format(root=str(ROOT), page=page, setup=setup, warm=warm)
    env = {**os.environ, "ABLATION_HOME": str(home), "ABLATION_START_WORKER": "0"}
    env.pop("ABLATION_DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{page} {setup}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cli_times(home: Path, args: list[str], repeats: int) -> dict:
    env = {**os.environ, "ABLATION_HOME": str(home)}
    env.pop("ABLATION_DATABASE_URL", None)
    times, stdout = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "cnn_ablation", *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
        times.append(time.perf_counter() - start)
        if out.returncode != 0:
            raise SystemExit(f"{args}: {out.stderr[-2000:]}")
        stdout = out.stdout
    probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "cnn_ablation", *args],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    imported = {line.rsplit("|", 1)[-1].strip() for line in probe.stderr.splitlines()
                if line.startswith("import time:")}
    heavy = sorted(m for m in ("tensorflow", "keras", "pandas", "plotly", "numpy")
                   if m in imported)
    return {"times": times, "imports": heavy, "stdout": stdout, "probe_stdout": probe.stdout}


def median_text(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} {five:.1f} {fifteen:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each CLI command, and "
                        "warm renders of each page")
    parser.add_argument("--browser", action="store_true",
                        help="also run benchmarks/dashboard_browser.py (Chromium)")
    args = parser.parse_args()
    print(f"database: {args.home / 'ablation.db'}", flush=True)
    build(args.home)
    print(f"load average (1, 5, 15 min) before: {load()}  ({os.cpu_count()} CPUs)", flush=True)

    rows: list[tuple[str, str, str, bool | None]] = []  # met: None for a row without a goal
    pages = [("Runs page, server render (AppTest)", "cnn_ablation/ui/runs.py", ""),
             ("Runs page sorted by best val acc (AppTest)", "cnn_ablation/ui/runs.py", "best"),
             ("Compare, 50 runs selected (AppTest)", "cnn_ablation/ui/compare.py", "compare50"),
             ("Studies page, largest study (480 runs) (AppTest)", "cnn_ablation/ui/studies.py",
              "largest_study")]
    for what, page, setup in pages:
        result = page_times(args.home, page, setup, args.repeats)
        warm = statistics.median(result["warm"])
        rows.append((what, f"cold {result['cold']:.2f} s, warm {warm:.2f} s "
                           f"(max {max(result['warm']):.2f})", "<= 0.5 s", warm <= 0.5))
        print(f"  {what}: {rows[-1][1]}", flush=True)

    runs = cli_times(args.home, ["runs"], args.repeats)
    listed = len(runs["stdout"].splitlines()) - 1
    show = cli_times(args.home, ["show", "9999"], args.repeats)
    cancel = cli_times(args.home, ["cancel", "9999"], args.repeats)
    submit = cli_times(args.home, ["submit", "--dataset", "synthetic", "--epochs", "1"], 1)
    queued = [submit["stdout"].split()[-1], submit["probe_stdout"].split()[-1]]
    delete = cli_times(args.home, ["delete", queued[0]], 1)  # and its import probe: the other
    cli_times(args.home, ["delete", queued[1]], 1)
    for what, result, goal, limit in (
            (f"`python -m cnn_ablation runs` ({listed:,} runs listed)", runs, "<= 1 s", 1.0),
            ("`python -m cnn_ablation show ID`", show, "<= 0.5 s", 0.5),
            ("`python -m cnn_ablation cancel ID`", cancel, "<= 0.5 s", 0.5),
            ("`python -m cnn_ablation submit` (1 run)", submit, "-", None),
            ("`python -m cnn_ablation delete ID`", delete, "-", None)):
        imports = ", ".join(result["imports"]) or "none of them"
        rows.append((what, f"{median_text(result['times'])}; imports {imports}", goal,
                     limit is None or statistics.median(result["times"]) <= limit))
        print(f"  {what}: {rows[-1][1]}", flush=True)

    if args.browser:
        from dashboard_browser import measure
        from dashboard_browser import rows as browser_rows

        rows += browser_rows(measure(args.home))

    print(f"\nload average (1, 5, 15 min) after: {load()}\n")
    print("| what | measured | goal | |\n|---|---|---|---|")
    for what, measured, goal, met in rows:
        mark = "" if met is None else "ok" if met else "**missed**"
        print(f"| {what} | {measured} | {goal} | {mark} |")


if __name__ == "__main__":
    main()
