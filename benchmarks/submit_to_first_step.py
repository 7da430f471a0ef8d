"""Time from `submit` to the first training step on a warm machine, and where it goes.

With one worker already running (a warm machine), queues runs one at a time on a cached
dataset and reads each run's claim time and the child's `startup` log line (process start and
imports, dataset load from cache, model build, first step). The first run warms the dataset
cache and is not counted.

    python benchmarks/submit_to_first_step.py [--runs 3] [--dataset fashion_mnist]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dataset", default="fashion_mnist")
    args = parser.parse_args()
    home = tempfile.mkdtemp()
    env = dict(os.environ, ABLATION_HOME=home, TF_CPP_MIN_LOG_LEVEL="3")
    os.environ.update(ABLATION_HOME=home)
    from cnn_ablation.storage.engine import get_engine
    from cnn_ablation.storage.runs import find_run

    engine = get_engine(f"sqlite:///{home}/ablation.db")
    worker = subprocess.Popen([sys.executable, "-m", "cnn_ablation", "worker", "--gpus", "none"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    rows = []
    for i in range(args.runs + 1):
        out = subprocess.run([sys.executable, "-m", "cnn_ablation", "submit", "--dataset",
                              args.dataset, "--epochs", "1", "--limit-train", "2000", "--seed",
                              str(i)], cwd=ROOT, env=env, check=True, capture_output=True)
        run_id = int(out.stdout.split()[-1])
        deadline = time.monotonic() + 600
        while (run := find_run(engine, run_id)).status in ("queued", "running"):
            if time.monotonic() > deadline:
                raise SystemExit(f"run {run_id} did not finish in 10 minutes")
            time.sleep(0.5)
        log = (Path(home) / "logs" / f"run-{run.id}.log").read_text()
        startup = json.loads(next(line for line in log.splitlines()
                                  if line.startswith("startup "))[len("startup "):])
        startup["claim_s"] = run.started_at - run.created_at
        total = startup["claim_s"] + sum(v for k, v in startup.items() if k != "claim_s")
        startup["submit_to_first_step_s"] = total
        if i == 0:
            print("warm-up run (fills the dataset cache):", json.dumps(startup))
            continue
        rows.append(startup)
        print(json.dumps(startup), flush=True)
    worker.terminate()
    worker.wait(timeout=60)
    print("\nmedian over", len(rows), "runs:")
    for key in ("claim_s", "process_start_and_imports_s", "dataset_load_s", "model_build_s",
                "to_first_step_s", "submit_to_first_step_s"):
        print(f"  {key:30s} {statistics.median(r[key] for r in rows):6.2f} s")


if __name__ == "__main__":
    main()
