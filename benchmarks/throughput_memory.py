"""Notebook path vs this project's training path: training images/s and peak resident memory.

Both train the chapter's seed network (all BatchNorm, batch 32, Adam 0.0005) on the same
CIFAR-shaped images (`synthetic:50000`, uint8, deterministic), each side in its own process
(peak RSS is per process), in interleaved pairs (A B, B A, A B, ...).

- notebook: shared/seed's code: a float32 copy divided by 255 and one-hot labels fed to `fit`,
  no validation and no callbacks (less work and less memory than the notebook itself, which
  validates on the test set: the comparison is on the notebook's side);
- project: the production path itself. A run is queued in a SQLite file and
  `training.prepare_training` sets it up exactly as `train_run` does (data split with the
  default validation split 0.1, model, RecordingCallback with per-layer diagnostics on, writing
  every epoch and a progress beat a second to the database), then `TrainingSetup.fit()`.

Each side trains 2 epochs; epoch 2 is timed (epoch 1 includes tracing). Training throughput is
training images / (epoch 2 wall time - its validation pass): the project validates 10 % of its
images each epoch and the notebook path nothing, so the validation pass is left out of the bar;
the whole epoch (validation included) is printed too. The project's recording work (epoch hooks,
diagnostics, database writes, batch hooks) is inside the timed epoch.

    python benchmarks/throughput_memory.py [--pairs 3] [--images 50000] [--val-split 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timer_callbacks():
    """(start, end) callbacks that bracket every other callback of an epoch, and time the
    validation pass inside it."""
    import keras

    times: dict[str, list[float]] = {"epoch": [], "validation": []}

    class Start(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.v = time.perf_counter()

        def on_test_end(self, logs=None):
            times["validation"].append(time.perf_counter() - self.v)

    class End(keras.callbacks.Callback):
        def __init__(self, start):
            super().__init__()
            self.start = start

        def on_epoch_end(self, epoch, logs=None):
            times["epoch"].append(time.perf_counter() - self.start.t)
            if len(times["validation"]) < len(times["epoch"]):
                times["validation"].append(0.0)

    start = Start()
    return start, End(start), times


def measure(mode: str, images: int, epochs: int = 2, val_split: float = 0.1) -> dict:
    """One side, in this process: returns images/s and peak RSS (call in a fresh process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT))
    import keras

    from cnn_ablation.config import RunConfig

    config = RunConfig(dataset=f"synthetic:{images}", epochs=epochs, val_split=val_split)
    start_cb, end_cb, times = _timer_callbacks()
    if mode == "notebook":
        from keras import layers, models, optimizers, utils

        from cnn_ablation import datasets

        data = datasets.load(config.dataset)
        keras.utils.set_random_seed(0)
        x_train = data.x_train.astype("float32") / 255.0  # shared/seed, In [5]
        y_train = utils.to_categorical(data.y_train, 10)
        del data
        inp = layers.Input((32, 32, 3))
        x = inp
        for filters, stride in ((32, 1), (32, 2), (64, 1), (64, 2)):
            x = layers.Conv2D(filters, 3, strides=stride, padding="same")(x)
            x = layers.BatchNormalization()(x)
            x = layers.LeakyReLU()(x)
        x = layers.Flatten()(x)
        x = layers.Dense(128)(x)
        x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU()(x)
        x = layers.Dropout(rate=0.5)(x)
        model = models.Model(inp, layers.Dense(10, activation="softmax")(x))
        model.compile(loss="categorical_crossentropy",
                      optimizer=optimizers.Adam(learning_rate=0.0005), metrics=["accuracy"])
        trained = len(x_train)
        model.fit(x_train, y_train, batch_size=32, epochs=epochs, shuffle=True, verbose=0,
                  callbacks=[start_cb, end_cb])
        diagnostics = None
    else:
        from cnn_ablation.launch import new_run
        from cnn_ablation.recording import RunControl
        from cnn_ablation.training import prepare_training
        from storage import lifecycle, runs
        from storage.engine import get_engine

        engine = get_engine(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
        run_id = lifecycle.start_foreground(engine, new_run(config), "bench", "bench", "cpu",
                                            60.0)
        setup = prepare_training(engine, runs.find_run_or_raise(engine, run_id), "bench",
                                 RunControl())
        trained = len(setup.y_fit)
        diagnostics = setup.recorder.diagnostics is not None
        setup.fit([start_cb, setup.recorder, end_cb])
        assert setup.recorder.epochs_recorded == epochs, "the run did not record its epochs"
    epoch, validation = times["epoch"][-1], times["validation"][-1]
    return {"mode": mode, "images_trained": trained, "epoch_s": epoch,
            "validation_s": validation, "images_per_s": trained / (epoch - validation),
            "images_per_s_whole_epoch": trained / epoch, "diagnostics": diagnostics,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--val-split", type=float, default=0.1)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.images, args.epochs, args.val_split)))
        return
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)", flush=True)
    env = dict(os.environ, ABLATION_HOME=tempfile.mkdtemp())
    pairs = []
    for i in range(args.pairs):
        order = ("notebook", "project") if i % 2 == 0 else ("project", "notebook")
        pair = {}
        for mode in order:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--images",
                                  str(args.images), "--epochs", str(args.epochs), "--val-split",
                                  str(args.val_split)],
                                 capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            pair[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            r = pair[mode]
            print(f"pair {i + 1} {mode:9s} {r['images_per_s']:7.0f} images/s training "
                  f"({r['images_per_s_whole_epoch']:.0f} over the whole epoch, "
                  f"{r['images_trained']} images, validation {r['validation_s']:.1f} s)   "
                  f"peak RSS {r['peak_rss_mb']:6.0f} MB", flush=True)
        pairs.append(pair)
    speed = [p["project"]["images_per_s"] / p["notebook"]["images_per_s"] for p in pairs]
    whole = [p["project"]["images_per_s_whole_epoch"] / p["notebook"]["images_per_s"]
             for p in pairs]
    memory = [p["project"]["peak_rss_mb"] / p["notebook"]["peak_rss_mb"] for p in pairs]
    print(f"\nload average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"project: val_split {args.val_split}, per-layer diagnostics "
          f"{'on' if pairs[0]['project']['diagnostics'] else 'off'}, recording to SQLite")
    for mode in ("notebook", "project"):
        print(f"{mode:9s} images/s {spread([p[mode]['images_per_s'] for p in pairs])}; "
              f"peak RSS MB {spread([p[mode]['peak_rss_mb'] for p in pairs])}")
    print(f"throughput ratio project/notebook, per pair: {spread(speed)} (bar >= 0.98); "
          f"counting the validation pass as training time: {spread(whole)}")
    print(f"peak memory ratio project/notebook, per pair: {spread(memory)} (bar <= 0.5)")


if __name__ == "__main__":
    main()
