"""What recording costs: the same training with and without RecordingCallback, one process.

Same data, same model and seed; A (no callbacks) and B (RecordingCallback writing every epoch,
progress every second and per-layer norms to a SQLite file) alternate. Epoch 1 of each fit
includes tracing, so each fit runs 2 epochs and the second epoch's time is compared.

    python benchmarks/recording_overhead.py [--pairs 3] [--images 10000]
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
from cnn_ablation.training import (  # noqa: E402
    DIAGNOSTIC_BATCH,
    RecordingCallback,
    RunControl,
    as_tensor,
    compiled_model,
    layer_norms,
    split,
)
from storage import queries  # noqa: E402
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


def one_fit(config, data, engine, record: bool) -> float:
    keras.utils.set_random_seed(config.seed)
    (x, y), val = split(config, data)
    model = compiled_model(config, data.info)
    timer = EpochTimer()
    callbacks = [timer]
    if record:
        run_id = queries.create_runs(engine, [new_run(config)], status="running")[0]
        diag = layer_norms(model, x[:DIAGNOSTIC_BATCH], y[:DIAGNOSTIC_BATCH])
        batches = -(-len(x) // config.batch_size)
        callbacks.insert(0, RecordingCallback(engine, run_id, batches, RunControl(), diag))
    val = (as_tensor(val[0]), val[1]) if val else None
    model.fit(as_tensor(x), y, batch_size=config.batch_size, epochs=2, validation_data=val,
              shuffle=True, verbose=0, callbacks=callbacks)
    return timer.times[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    config = RunConfig(dataset=f"synthetic:{args.images}", epochs=2)
    data = datasets.load(config.dataset)
    engine = get_engine(f"sqlite:///{tempfile.mkdtemp()}/overhead.db")
    plain, recorded = [], []
    for i in range(args.pairs):
        plain.append(one_fit(config, data, engine, record=False))
        recorded.append(one_fit(config, data, engine, record=True))
        print(f"pair {i + 1}: without {plain[-1]:.2f} s   with recording {recorded[-1]:.2f} s",
              flush=True)
    a, b = statistics.median(plain), statistics.median(recorded)
    print(f"\nmedian epoch: without {a:.2f} s, with recording {b:.2f} s; "
          f"overhead {100 * (b - a) / a:+.2f} % of epoch time (bar < 1 %)")


if __name__ == "__main__":
    main()
