"""Notebook path vs this project's training path: training images/s and peak resident memory.

Both train the chapter's seed network (all BatchNorm, batch 32, Adam 0.0005) on the same
CIFAR-shaped images (`synthetic:50000`, uint8, deterministic):

- notebook: shared/seed's code: a float32 copy divided by 255 and one-hot labels fed to `fit`,
  no validation and no callbacks (less work and less memory than the notebook itself, which
  validates on the test set: the comparison is on the notebook's side);
- project: the production path itself. A run is queued in a SQLite file and
  `training.run.prepare_training` sets it up exactly as `train_run` does (data split with the
  default validation split 0.1, model, RecordingCallback with per-layer diagnostics on, writing
  every epoch and a progress beat a second to the database), then `TrainingSetup.fit()`.

Throughput: both sides live in one process and train one epoch at a time in turn (rounds A B,
B A, A B, ...; round 0, which traces the graphs, is not counted), so each round's ratio
compares epochs trained seconds apart: on a shared machine whose speed drifts by 2x over
minutes, separate processes minutes apart measure the drift. The project's epochs go through
its own `TrainingSetup.fit` (one epoch per call, so a new data iterator each epoch, as the
notebook side gets). Training throughput is training images / (epoch wall time - its validation
pass): the project validates 10 % of its images each epoch and the notebook nothing, so the
validation pass is left out of the bar; the whole epoch is printed too. The project's recording
work (epoch hooks, diagnostics, database writes, batch hooks) is inside the timed epoch.

Peak memory: each side in its own process (peak RSS, VmHWM, is per process), --memory-pairs
interleaved pairs, each training --memory-epochs epochs as a run does (the project: one
`setup.fit()`); run first, while this process is small.

    python benchmarks/throughput_memory.py [--rounds 6] [--memory-pairs 3] [--images 50000]
                                           [--val-split 0.1]
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


def notebook_side(images: int):
    """shared/seed's training, In [5] onwards: returns fit(first, last, callbacks) and the
    number of images trained."""
    import keras
    from keras import layers, models, optimizers, utils

    from cnn_ablation.data import datasets

    data = datasets.load(f"synthetic:{images}")
    keras.utils.set_random_seed(0)
    x_train = data.x_train.astype("float32") / 255.0
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

    def fit(first: int, last: int, callbacks: list) -> None:
        model.fit(x_train, y_train, batch_size=32, initial_epoch=first, epochs=last,
                  shuffle=True, verbose=0, callbacks=callbacks)

    return fit, len(x_train)


def project_side(images: int, epochs: int, val_split: float):
    """The production setup of a queued run: returns fit(first, last, callbacks), the number
    of images trained and whether the per-layer diagnostics are on."""
    import dataclasses

    from cnn_ablation.config import RunConfig
    from cnn_ablation.jobs.launch import new_run
    from cnn_ablation.storage import lifecycle, runs
    from cnn_ablation.storage.engine import get_engine
    from cnn_ablation.training.recording import RunControl
    from cnn_ablation.training.run import prepare_training

    config = RunConfig(dataset=f"synthetic:{images}", epochs=epochs, val_split=val_split)
    engine = get_engine(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
    run_id = lifecycle.start_foreground(engine, new_run(config), "bench", "bench", "cpu", 60.0)
    setup = prepare_training(engine, runs.find_run_or_raise(engine, run_id), "bench",
                             RunControl())

    def fit(first: int, last: int, callbacks: list) -> None:
        """`TrainingSetup.fit` itself, from epoch `first` up to `last` (a run: 0 to epochs)."""
        setup.initial_epoch = first
        setup.config = dataclasses.replace(setup.config, epochs=last)
        start, end = callbacks
        setup.fit([start, setup.recorder, end])
        assert setup.recorder.epochs_recorded == last, "the run did not record its epochs"

    return fit, len(setup.y_fit), setup.recorder.diagnostics is not None


def _prepare() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT))


def memory_child(mode: str, images: int, epochs: int, val_split: float) -> dict:
    """One side trained as a run trains (all its epochs in one `fit`), in this fresh process:
    its peak RSS."""
    _prepare()
    if mode == "notebook":
        fit, trained = notebook_side(images)
    else:
        fit, trained, _ = project_side(images, epochs, val_split)
    start, end, _ = _timer_callbacks()
    fit(0, epochs, [start, end])
    return {"mode": mode, "images_trained": trained, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program: VmHWM, which exec
    resets. (`getrusage`'s ru_maxrss is not: a child started by a parent holding 3 GB reports
    3 GB, whatever it used itself.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def throughput(images: int, rounds: int, val_split: float) -> dict:
    """Both sides in this process, one epoch each per round, in alternating order."""
    _prepare()
    sides = {"notebook": notebook_side(images)}
    fit, trained, diagnostics = project_side(images, rounds + 1, val_split)
    sides["project"] = (fit, trained)
    result: dict = {"notebook": [], "project": [], "project_whole_epoch": [],
                    "project_validation_s": [], "diagnostics": diagnostics,
                    "trained": {k: v[1] for k, v in sides.items()}}
    for epoch in range(rounds + 1):
        order = ("notebook", "project") if epoch % 2 == 0 else ("project", "notebook")
        for mode in order:
            fit, trained = sides[mode]
            start, end, times = _timer_callbacks()
            fit(epoch, epoch + 1, [start, end])
            whole, validation = times["epoch"][-1], times["validation"][-1]
            if epoch == 0:
                continue  # traces the graphs
            result[mode].append(trained / (whole - validation))
            if mode == "project":
                result["project_whole_epoch"].append(trained / whole)
                result["project_validation_s"].append(validation)
        if epoch:
            print(f"round {epoch}: notebook {result['notebook'][-1]:6.0f} images/s, project "
                  f"{result['project'][-1]:6.0f} images/s training "
                  f"({result['project_whole_epoch'][-1]:.0f} over the whole epoch, validation "
                  f"{result['project_validation_s'][-1]:.1f} s), ratio "
                  f"{result['project'][-1] / result['notebook'][-1]:.3f}", flush=True)
    return result


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6, help="timed throughput rounds")
    parser.add_argument("--memory-pairs", type=int, default=3)
    parser.add_argument("--memory-epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--val-split", type=float, default=0.1)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(memory_child(args.child, args.images, args.memory_epochs,
                                      args.val_split)))
        return
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)", flush=True)
    os.environ.setdefault("ABLATION_HOME", tempfile.mkdtemp())
    pairs = []
    for i in range(args.memory_pairs):
        order = ("notebook", "project") if i % 2 == 0 else ("project", "notebook")
        pair = {}
        for mode in order:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--images",
                                  str(args.images), "--memory-epochs", str(args.memory_epochs),
                                  "--val-split", str(args.val_split)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-3000:])
            pair[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"memory pair {i + 1} {mode:9s} peak RSS {pair[mode]['peak_rss_mb']:6.0f} MB "
                  f"({pair[mode]['images_trained']} images trained, {args.memory_epochs} "
                  "epochs)", flush=True)
        pairs.append(pair)
    # after the memory pairs: this process grows to both sides' size
    speed = throughput(args.images, args.rounds, args.val_split)
    ratios = [p / n for p, n in zip(speed["project"], speed["notebook"], strict=True)]
    whole = [p / n for p, n in zip(speed["project_whole_epoch"], speed["notebook"], strict=True)]
    memory = [p["project"]["peak_rss_mb"] / p["notebook"]["peak_rss_mb"] for p in pairs]
    print(f"\nload average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"project: val_split {args.val_split} ({speed['trained']['project']} of "
          f"{args.images} images trained), per-layer diagnostics "
          f"{'on' if speed['diagnostics'] else 'off'}, recording to SQLite")
    for mode in ("notebook", "project"):
        print(f"{mode:9s} images/s {spread(speed[mode])}; peak RSS MB "
              f"{spread([p[mode]['peak_rss_mb'] for p in pairs])}")
    print(f"throughput ratio project/notebook over {args.rounds} rounds: {spread(ratios)} "
          f"(bar >= 0.98); counting the validation pass as training time: {spread(whole)}")
    print(f"peak memory ratio project/notebook over {args.memory_pairs} pairs: "
          f"{spread(memory)} (bar <= 0.5)")


if __name__ == "__main__":
    main()
