"""One training run: seeds, data split, compile as the chapter, fit with recording callbacks,
test evaluation. Every finished epoch is committed as it ends; the final status is one of
completed | failed | cancelled | diverged (storage.status)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable

import keras
import numpy as np
from sqlalchemy import Engine

from cnn_ablation import datasets
from cnn_ablation.config import RunConfig
from cnn_ablation.model import build_model
from cnn_ablation.recording import (
    DIAGNOSTIC_BATCH,
    PROGRESS_INTERVAL_S,
    RecordingCallback,
    RunControl,
    layer_norms,
)
from cnn_ablation.settings import settings
from storage import lifecycle, runs
from storage.status import RunStatus

log = logging.getLogger(__name__)


def split(config: RunConfig, data: datasets.Dataset):
    """Training limit, then a seeded shuffle split into fit and validation parts (still uint8)."""
    x, y = data.x_train, data.y_train
    if config.limit_train:
        x, y = x[: config.limit_train], y[: config.limit_train]
    n_val = int(round(len(x) * config.val_split))
    if n_val == 0:
        return (x, y), None  # no copy: the arrays go to fit as they are
    order = np.random.default_rng(config.seed).permutation(len(x))
    fit_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
    return (_take(x, fit_idx), y[fit_idx]), (_take(x, val_idx), y[val_idx])


def _take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = datasets.aligned_empty((len(idx), *x.shape[1:]), x.dtype)  # aligned: see as_tensor
    return np.take(x, idx, axis=0, out=out)


def as_tensor(x: np.ndarray):
    """Images as a TensorFlow tensor sharing memory with `x` (DLPack, no copy).

    Given a NumPy array, Keras' `fit` copies it whole into TensorFlow and briefly holds a second
    copy while doing so (+300 MB peak for 50,000 CIFAR-sized images: benchmarks/). TensorFlow
    can read the array in place when it is C-contiguous and 64-byte aligned, which datasets.py
    and `split` ensure; anything else is passed on unchanged (Keras copies it, as before).
    """
    aligned = x.flags.c_contiguous and x.flags.writeable and x.ctypes.data % 64 == 0
    if keras.backend.backend() != "tensorflow" or not aligned:
        return x
    import tensorflow as tf

    try:
        return tf.experimental.dlpack.from_dlpack(x.__dlpack__())
    except (TypeError, ValueError, BufferError, RuntimeError):  # no DLPack here: let Keras copy
        return x


def test_report(model: keras.Model, data: datasets.Dataset) -> dict:
    predicted = np.argmax(model.predict(data.x_test, batch_size=1000, verbose=0), axis=1)
    k = data.info.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (data.y_test.astype(np.int64), predicted), 1)
    return {"class_names": list(data.info.class_names), "confusion": confusion.tolist()}


def compiled_model(config: RunConfig, info: datasets.DatasetInfo) -> keras.Model:
    """The chapter's compile: Adam at the config's rate, cross-entropy, accuracy."""
    model = build_model(config, info.shape, info.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        # Integer labels: the same loss as the chapter's one-hot categorical cross-entropy,
        # without a float32 one-hot copy of the labels.
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _startup_line(phases: dict[str, float], first_step: float, process_start: float | None) -> str:
    """Where the time before the first training step went, as one log line (JSON)."""
    times = {"dataset_load_s": phases["dataset_loaded"] - phases["start"],
             "model_build_s": phases["model_built"] - phases["dataset_loaded"],
             "to_first_step_s": first_step - phases["model_built"]}
    if process_start is not None:
        times["process_start_and_imports_s"] = phases["start"] - process_start
    return "startup " + json.dumps({k: round(v, 3) for k, v in times.items()})


def train_run(engine: Engine, run_id: int, echo: Callable[[str], None] | None = None,
              interval: float = PROGRESS_INTERVAL_S, control: RunControl | None = None,
              started_at: float | None = None) -> str:
    """Train run `run_id` (already `running`) to its final status, which is returned.
    `started_at`: when this process started, to report its start-up time in the log."""
    control = control or RunControl()
    try:
        run = runs.find_run_or_raise(engine, run_id)
        config = RunConfig.from_json(run.config_json)
        keras.utils.set_random_seed(config.seed)
        phases = {"start": time.time()}
        data = datasets.load(config.dataset, config.image_size)
        phases["dataset_loaded"] = time.time()
        (x_fit, y_fit), validation = split(config, data)
        model = compiled_model(config, data.info)
        batches = math.ceil(len(x_fit) / config.batch_size)
        diag = layer_norms(model, x_fit[:DIAGNOSTIC_BATCH], y_fit[:DIAGNOSTIC_BATCH])
        phases["model_built"] = time.time()
        callback = RecordingCallback(engine, run_id, batches, control, diag, echo, interval)
        if echo:
            callback.on_first_step = lambda at: echo(_startup_line(phases, at, started_at))
        if lifecycle.beat(engine, run_id):
            control.cancel.set()
        if validation is not None:
            validation = (as_tensor(validation[0]), validation[1])
        model.fit(as_tensor(x_fit), y_fit, batch_size=config.batch_size, epochs=config.epochs,
                  validation_data=validation, shuffle=True, verbose=0, callbacks=[callback])
        if callback.outcome is not None:
            status, reason = callback.outcome
            lifecycle.finish(engine, run_id, status, error=reason)
            return status
        test_loss, test_accuracy = model.evaluate(data.x_test, data.y_test, batch_size=1000,
                                                  verbose=0)
        report = test_report(model, data)
        lifecycle.finish(engine, run_id, RunStatus.COMPLETED, test_loss=float(test_loss),
                         test_accuracy=float(test_accuracy), test_report_json=json.dumps(report),
                         progress_batch=batches, progress_epoch=config.epochs)
        return RunStatus.COMPLETED
    except KeyboardInterrupt:
        lifecycle.finish(engine, run_id, RunStatus.CANCELLED, error="interrupted (Ctrl-C)")
        raise
    except Exception as exc:  # recorded on the run: the page and the CLI show it
        log.exception("run %s failed", run_id)
        lifecycle.finish(engine, run_id, RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}",
                         traceback=traceback.format_exc())
        return RunStatus.FAILED


def process_started_at() -> float | None:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # psutil missing or /proc unreadable: the log line just lacks this part
        return None


def execute(engine: Engine, run_id: int, echo: Callable[[str], None] | None = None,
            parent_pid: int | None = None) -> str:
    """Train a `running` run in this process with a heartbeat thread beside it.

    The thread keeps the run's heartbeat fresh while data loads or a long epoch runs, passes a
    cancel request to the training loop, and ends this process at once if `parent_pid` (the
    worker) is gone, so that a killed worker's run is reported "worker lost" instead of going on
    unowned. SIGTERM asks the run to stop after the current epoch (status cancelled).
    """
    control = RunControl()
    signal.signal(signal.SIGTERM, lambda *_: control.stop_after_epoch.set())
    done = threading.Event()
    interval = settings().heartbeat_s

    def beat() -> None:
        while not done.wait(interval):
            if parent_pid is not None and os.getppid() != parent_pid:
                os._exit(70)
            try:
                if lifecycle.beat(engine, run_id):
                    control.cancel.set()
            except Exception:  # a busy database must not kill the run; the next beat retries
                log.warning("heartbeat of run %s failed; retrying in %g s", run_id, interval,
                            exc_info=True)

    lifecycle.attach_process(engine, run_id, os.getpid(), heartbeat_interval=interval)
    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        return train_run(engine, run_id, echo, control=control, started_at=process_started_at())
    finally:
        done.set()
