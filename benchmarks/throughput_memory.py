"""Notebook path vs this project's training path: images/s and peak resident memory.

Both train the chapter's seed network (all BatchNorm, batch 32, Adam 0.0005) on the same 50,000
CIFAR-shaped images (`synthetic:50000`, uint8, deterministic). The notebook path is shared/seed's
code: a float32 copy divided by 255 and one-hot labels fed to `fit`. The project path is
`training.split` + `training.compiled_model` + `training.as_tensor` + `RecordingCallback`
writing to a SQLite file, as a run does. Each measurement is its own process (peak RSS is per
process), alternating A B A B.

    python benchmarks/throughput_memory.py [--pairs 2] [--epochs 1] [--images 50000]
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


def measure(mode: str, images: int, epochs: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT))
    import keras

    from cnn_ablation import datasets
    from cnn_ablation.config import RunConfig

    config = RunConfig(dataset=f"synthetic:{images}", epochs=epochs, val_split=0.0)
    data = datasets.load(config.dataset)
    keras.utils.set_random_seed(0)
    if mode == "notebook":
        from keras import layers, models, optimizers, utils

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
        callbacks = []
    else:
        from cnn_ablation.launch import new_run
        from cnn_ablation.recording import RecordingCallback, RunControl
        from cnn_ablation.training import as_tensor, compiled_model, split
        from storage import lifecycle
        from storage.engine import get_engine

        engine = get_engine(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
        run_id = lifecycle.start_foreground(engine, new_run(config), "bench", "bench", "cpu",
                                            60.0)
        (x_train, y_train), _ = split(config, data)
        model = compiled_model(config, data.info)
        batches = -(-len(x_train) // config.batch_size)
        callbacks = [RecordingCallback(engine, run_id, "bench", batches, RunControl())]
        x_train = as_tensor(x_train)
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=32, epochs=epochs, shuffle=True, verbose=0,
              callbacks=callbacks)
    seconds = time.perf_counter() - start
    return {"mode": mode, "images_per_s": len(x_train) * epochs / seconds, "fit_s": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.images, args.epochs)))
        return
    results: dict[str, list[dict]] = {"notebook": [], "project": []}
    env = dict(os.environ, ABLATION_HOME=tempfile.mkdtemp())
    for _ in range(args.pairs):
        for mode in ("notebook", "project"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--images",
                                  str(args.images), "--epochs", str(args.epochs)],
                                 capture_output=True, text=True, check=True, env=env)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results[mode].append(result)
            print(f"{mode:9s} {result['images_per_s']:8.0f} images/s   "
                  f"peak RSS {result['peak_rss_mb']:7.0f} MB   fit {result['fit_s']:.1f} s",
                  flush=True)
    nb = {k: statistics.median(r[k] for r in results["notebook"]) for k in ("images_per_s",
                                                                              "peak_rss_mb")}
    pr = {k: statistics.median(r[k] for r in results["project"]) for k in ("images_per_s",
                                                                             "peak_rss_mb")}
    print(f"\nmedian of {args.pairs}: notebook {nb['images_per_s']:.0f} images/s, "
          f"{nb['peak_rss_mb']:.0f} MB; project {pr['images_per_s']:.0f} images/s, "
          f"{pr['peak_rss_mb']:.0f} MB")
    print(f"throughput ratio project/notebook: {pr['images_per_s'] / nb['images_per_s']:.3f} "
          f"(bar >= 0.98)")
    print(f"peak memory ratio project/notebook: {pr['peak_rss_mb'] / nb['peak_rss_mb']:.3f} "
          f"(bar <= 0.5)")


if __name__ == "__main__":
    main()
