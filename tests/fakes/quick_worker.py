"""A real worker process whose children record epochs without TensorFlow: the claim, heartbeat,
cancel and finish paths exactly as in production, at a pace that lets a test push hundreds of
runs through several workers in a minute or two. Used by tests/test_scale_out.py.

    python -m tests.fakes.quick_worker [--once]          (a worker)
    python -m tests.fakes.quick_worker --run ID --parent-pid PID   (its child: one run)
"""

import argparse
import os
import sys
import time

from cnn_ablation import log
from cnn_ablation.jobs.slots import make_slots
from cnn_ablation.jobs.worker import Worker
from cnn_ablation.settings import settings
from cnn_ablation.storage import lifecycle, runs
from cnn_ablation.storage.engine import get_engine
from cnn_ablation.storage.records import RunLost


class QuickWorker(Worker):
    def child_command(self, run_id: int) -> list[str]:
        return [sys.executable, "-m", "tests.fakes.quick_worker", "--run", str(run_id),
                "--parent-pid", str(os.getpid())]


def train(run_id: int) -> None:
    """What a training process writes, in order: progress, each epoch, the finish."""
    engine = get_engine(settings().database_url)
    run = runs.find_run_or_raise(engine, run_id)
    worker_id = run.worker_id or ""
    lifecycle.attach_process(engine, run_id, worker_id, os.getpid())
    try:
        for epoch in range(1, run.epochs + 1):
            cancel = lifecycle.report_progress(engine, run_id, worker_id, "training", epoch, 1, 2)
            time.sleep(0.05)
            if cancel == "now":
                lifecycle.finish(engine, run_id, "cancelled", worker_id=worker_id,
                                 error="cancelled by user")
                return
            cancel = lifecycle.record_epoch(engine, run_id, worker_id, epoch,
                                            {"loss": 1.0 / epoch, "accuracy": 0.5}, 0.05)
            if cancel is not None and epoch < run.epochs:
                lifecycle.finish(engine, run_id, "cancelled", worker_id=worker_id,
                                 error=f"cancelled by user after epoch {epoch}")
                return
        lifecycle.finish(engine, run_id, "completed", worker_id=worker_id, test_accuracy=0.5,
                         test_loss=1.0)
    except RunLost:
        return


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--run", type=int)
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args()
    if args.run is not None:
        train(args.run)
        return 0
    log.setup("worker")
    QuickWorker(get_engine(settings().database_url), make_slots("none", runs_per_device=2),
                once=args.once).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
