"""What recording costs: the production setup trained with and without its RecordingCallback.

Each fit is set up by `training.run.prepare_training`, exactly as `train_run` sets up a run (its
data split, model, RecordingCallback with per-layer diagnostics, writing to a SQLite file);
side A fits without the recorder, side B with it (`TrainingSetup.fit`), in A B, B A, ... order,
2 epochs each, and the second epoch is compared (epoch 1 includes tracing). The epoch timer
brackets the recorder: it starts before the recorder's epoch-begin hook and stops after its
epoch-end hook (the epoch row, the per-layer norms on a fixed 64-image batch, the database
write), so everything recording adds to an epoch is inside the timed epoch.

On a shared 2-core machine epoch times drift by more than 10 % between fits, far more than the
1 % being measured, so the script also times the recording work itself: the time spent inside
the callback's epoch hooks (blocking the training loop) and inside its batch hook (run on Keras'
callback thread, beside the training step), as a share of the epoch.

    python benchmarks/recording_overhead.py [--pairs 4] [--images 5000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("ABLATION_HOME", tempfile.mkdtemp())

import keras  # noqa: E402

from cnn_ablation.config import RunConfig  # noqa: E402
from cnn_ablation.jobs.launch import new_run  # noqa: E402
from cnn_ablation.storage import lifecycle, runs  # noqa: E402
from cnn_ablation.storage.engine import get_engine  # noqa: E402
from cnn_ablation.training.recording import RecordingCallback, RunControl  # noqa: E402
from cnn_ablation.training.run import prepare_training  # noqa: E402


class EpochStart(keras.callbacks.Callback):
    """First in the callback list: the epoch's clock starts before any other hook runs."""

    def __init__(self):
        super().__init__()
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()


class EpochEnd(keras.callbacks.Callback):
    """Last in the list: the epoch's clock stops after every other hook has run."""

    def __init__(self, start: EpochStart):
        super().__init__()
        self.start, self.times = start, []

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start.started)


def timed(recorder: RecordingCallback) -> RecordingCallback:
    """The run's own recorder, with a stopwatch around each of its hooks."""
    recorder.blocking = [0.0, 0.0]  # type: ignore[attr-defined]  # per epoch: epoch hooks
    recorder.batch_hook = [0.0, 0.0]  # type: ignore[attr-defined]  # per epoch: batch hooks

    def wrap(name, bucket, epoch_of):
        hook = getattr(recorder, name)

        def run(*args, **kwargs):
            start = time.perf_counter()
            hook(*args, **kwargs)
            getattr(recorder, bucket)[min(epoch_of(args), 1)] += time.perf_counter() - start
        setattr(recorder, name, run)

    wrap("on_epoch_begin", "blocking", lambda a: a[0])
    wrap("on_epoch_end", "blocking", lambda a: a[0])
    wrap("on_train_batch_end", "batch_hook", lambda a: recorder._epoch - 1)
    return recorder


def one_fit(config: RunConfig, engine, record: bool):
    run_id = lifecycle.start_foreground(engine, new_run(config), "bench", "bench", "cpu", 60.0)
    setup = prepare_training(engine, runs.find_run_or_raise(engine, run_id), "bench",
                             RunControl())
    start = EpochStart()
    end = EpochEnd(start)
    recorder = timed(setup.recorder) if record else None
    setup.fit([start, recorder, end] if recorder else [start, end])
    lifecycle.finish(engine, run_id, "cancelled", error="benchmark fit")
    return end.times[1], recorder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--images", type=int, default=5_000)
    args = parser.parse_args()
    config = RunConfig(dataset=f"synthetic:{args.images}", epochs=2)  # val_split 0.1
    engine = get_engine(f"sqlite:///{tempfile.mkdtemp()}/overhead.db")
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    plain, recorded, blocking, batch_hook = [], [], [], []
    for i in range(args.pairs):
        order = (False, True) if i % 2 == 0 else (True, False)  # A B, then B A
        for record in order:
            seconds, recorder = one_fit(config, engine, record)
            (recorded if record else plain).append(seconds)
            if recorder:
                blocking.append(recorder.blocking[1] / seconds)  # type: ignore[attr-defined]
                batch_hook.append(recorder.batch_hook[1] / seconds)  # type: ignore[attr-defined]
        print(f"pair {i + 1}: without {plain[-1]:.2f} s   with recording {recorded[-1]:.2f} s   "
              f"recording work: {100 * blocking[-1]:.2f} % blocking + "
              f"{100 * batch_hook[-1]:.2f} % on the callback thread", flush=True)
    a, b = statistics.median(plain), statistics.median(recorded)
    print(f"\nload average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"median epoch: without {a:.2f} s, with recording {b:.2f} s: "
          f"{100 * (b - a) / a:+.2f} % (A/B, within the drift above; "
          f"spread without {min(plain):.2f}-{max(plain):.2f} s, "
          f"with {min(recorded):.2f}-{max(recorded):.2f} s)")
    print(f"recording work, median share of the epoch: {100 * statistics.median(blocking):.2f} % "
          f"in epoch hooks (blocking) + {100 * statistics.median(batch_hook):.2f} % in batch "
          f"hooks (callback thread) (bar < 1 %); spread {100 * min(blocking):.2f}-"
          f"{100 * max(blocking):.2f} % and {100 * min(batch_hook):.2f}-"
          f"{100 * max(batch_hook):.2f} %")


if __name__ == "__main__":
    main()
