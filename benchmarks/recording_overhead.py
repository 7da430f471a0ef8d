"""What recording costs: the same training with and without RecordingCallback, one process.

Same data, same model and seed; A (no callbacks) and B (RecordingCallback writing every epoch,
progress every second and per-layer norms to a SQLite file) run in A B B A order. Epoch 1 of each
fit includes tracing, so each fit runs 2 epochs and the second epoch's time is compared.

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

from cnn_ablation import datasets  # noqa: E402
from cnn_ablation.config import RunConfig  # noqa: E402
from cnn_ablation.launch import new_run  # noqa: E402
from cnn_ablation.recording import (  # noqa: E402
    DIAGNOSTIC_BATCH,
    RecordingCallback,
    RunControl,
    layer_norms,
)
from cnn_ablation.training import as_tensor, compiled_model, split  # noqa: E402
from storage import lifecycle  # noqa: E402
from storage.engine import get_engine  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Epoch wall times only (no batch hooks), on both sides alike."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._t)


class TimedRecording(RecordingCallback):
    """RecordingCallback with a stopwatch around each hook (the work it adds to an epoch)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.blocking = [0.0, 0.0]  # per epoch: seconds inside epoch begin + end hooks
        self.batch_hook = [0.0, 0.0]  # per epoch: seconds inside batch hooks (callback thread)

    def _timed(self, bucket, epoch, fn, *args):
        start = time.perf_counter()
        fn(*args)
        bucket[min(epoch, 1)] += time.perf_counter() - start

    def on_epoch_begin(self, epoch, logs=None):
        self._timed(self.blocking, epoch, super().on_epoch_begin, epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._timed(self.blocking, epoch, super().on_epoch_end, epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._timed(self.batch_hook, self._epoch - 1, super().on_train_batch_end, batch, logs)


def one_fit(config, data, engine, record: bool):
    keras.utils.set_random_seed(config.seed)
    (x, y), val = split(config, data)
    model = compiled_model(config, data.info)
    timer = EpochTimer()
    callbacks = [timer]
    recorder = None
    if record:
        run_id = lifecycle.start_foreground(engine, new_run(config), "bench", "bench", "cpu",
                                            60.0)
        diag = layer_norms(model, x[:DIAGNOSTIC_BATCH], y[:DIAGNOSTIC_BATCH])
        batches = -(-len(x) // config.batch_size)
        recorder = TimedRecording(engine, run_id, "bench", batches, RunControl(), diag)
        callbacks.insert(0, recorder)
    val = (as_tensor(val[0]), val[1]) if val else None
    model.fit(as_tensor(x), y, batch_size=config.batch_size, epochs=2, validation_data=val,
              shuffle=True, verbose=0, callbacks=callbacks)
    return timer.times[1], recorder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--images", type=int, default=5_000)
    args = parser.parse_args()
    config = RunConfig(dataset=f"synthetic:{args.images}", epochs=2)
    data = datasets.load(config.dataset)
    engine = get_engine(f"sqlite:///{tempfile.mkdtemp()}/overhead.db")
    plain, recorded, blocking, batch_hook = [], [], [], []
    for i in range(args.pairs):
        order = (False, True) if i % 2 == 0 else (True, False)  # A B, then B A
        for record in order:
            seconds, recorder = one_fit(config, data, engine, record)
            (recorded if record else plain).append(seconds)
            if recorder:
                blocking.append(recorder.blocking[1] / seconds)
                batch_hook.append(recorder.batch_hook[1] / seconds)
        print(f"pair {i + 1}: without {plain[-1]:.2f} s   with recording {recorded[-1]:.2f} s   "
              f"recording work: {100 * blocking[-1]:.2f} % blocking + "
              f"{100 * batch_hook[-1]:.2f} % on the callback thread", flush=True)
    a, b = statistics.median(plain), statistics.median(recorded)
    print(f"\nmedian epoch: without {a:.2f} s, with recording {b:.2f} s: "
          f"{100 * (b - a) / a:+.2f} % (A/B, within the drift above)")
    print(f"recording work, median share of the epoch: {100 * statistics.median(blocking):.2f} % "
          f"in epoch hooks (blocking) + {100 * statistics.median(batch_hook):.2f} % in batch "
          f"hooks (callback thread) (bar < 1 %)")


if __name__ == "__main__":
    main()
