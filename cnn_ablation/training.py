"""One training run: seeds, data split, compile as the chapter, fit with recording callbacks,
test evaluation. Every finished epoch is committed as it ends; the final status is one of
completed | failed | cancelled | diverged (DESIGN.md's lifecycle)."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
from sqlalchemy import Engine

from cnn_ablation import datasets
from cnn_ablation.config import RunConfig
from cnn_ablation.model import build_model
from cnn_ablation.worker import heartbeat_interval
from storage import queries

PROGRESS_INTERVAL_S = 1.0  # progress/cancel check at most this often (one DB write each)
DIAGNOSTIC_BATCH = 64  # fixed images for per-layer gradient/weight norms at each epoch end:
# enough for a stable trend, and cheap (benchmarks/recording_overhead.py measures the cost)


class RecordingCallback(keras.callbacks.Callback):
    """Commits each epoch, reports progress, honours cancel/stop requests, and stops on NaN."""

    async_safe = True  # batch hooks run on Keras' callback thread, so steps never wait on the DB

    def __init__(self, engine: Engine, run_id: int, batches: int, control: RunControl,
                 diagnostics=None, echo: Callable[[str], None] | None = None,
                 interval: float = PROGRESS_INTERVAL_S):
        super().__init__()
        self.engine, self.run_id, self.batches, self.control = engine, run_id, batches, control
        self.diagnostics, self.echo, self.interval = diagnostics, echo, interval
        self.outcome: tuple[str, str | None] | None = None  # (status, reason) once decided
        self.on_first_step: Callable[[float], None] | None = None
        self._lock = threading.Lock()
        self._epoch = 0
        self._epoch_start = time.monotonic()
        self._next_report = 0.0
        self.first_step_at: float | None = None  # wall time when the first batch ended

    def _stop(self, status: str, reason: str | None) -> None:
        if self.outcome is None:
            self.outcome = (status, reason)
        self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1
        self._epoch_start = time.monotonic()
        queries.report_progress(self.engine, self.run_id, self._epoch, 0, self.batches)

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now < self._next_report or not self._lock.acquire(blocking=False):
            return  # the first batch always passes: _next_report starts at 0
        try:
            if self.first_step_at is None:
                self.first_step_at = time.time()
                if self.on_first_step:
                    self.on_first_step(self.first_step_at)
            self._next_report = now + self.interval
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                self._stop("diverged", f"loss became {loss} in epoch {self._epoch} "
                                       f"(seen at batch {batch + 1} of {self.batches})")
                return
            if queries.report_progress(self.engine, self.run_id, self._epoch, batch + 1,
                                       self.batches) or self.control.cancel.is_set():
                self._stop("cancelled", "cancelled by user")
        finally:
            self._lock.release()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.monotonic() - self._epoch_start
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            self._stop("diverged", f"loss became {loss} in epoch {epoch + 1} (end of epoch)")
            return  # a NaN epoch is not recorded as a result
        stats = self.diagnostics() if self.diagnostics else None
        metrics = {k: _finite_or_none(logs.get(k))
                   for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        queries.record_epoch(self.engine, self.run_id, epoch + 1, metrics, seconds, stats)
        if self.echo:
            self.echo(_epoch_line(epoch + 1, self.params.get("epochs"), metrics, seconds))
        if self.control.stop_after_epoch.is_set():
            self._stop("cancelled", "worker stopped")


def _finite_or_none(value):
    return float(value) if value is not None and math.isfinite(value) else None


def _epoch_line(epoch, epochs, m, seconds) -> str:
    def fmt(v):
        return "  n/a " if v is None else f"{v:.4f}"
    return (f"epoch {epoch}/{epochs}  loss {fmt(m['loss'])}  acc {fmt(m['accuracy'])}  "
            f"val_loss {fmt(m['val_loss'])}  val_acc {fmt(m['val_accuracy'])}  {seconds:.1f} s")


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


def layer_norms(model: keras.Model, x: np.ndarray, y: np.ndarray) -> Callable[[], list[dict]]:
    """A function giving per-layer gradient and weight L2 norms on one fixed batch.

    Gradients are taken in training mode (BatchNorm on batch statistics, as during fit); the
    BatchNorm moving statistics it would update are put back, so the measurement changes nothing.
    """
    if keras.backend.backend() != "tensorflow":
        return lambda: []
    import tensorflow as tf

    weighted = [layer for layer in model.layers
                if layer.name.startswith(("conv_", "dense_", "output"))]
    variables = [v for layer in weighted for v in layer.trainable_variables]
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    x_fixed, y_fixed = tf.constant(x), tf.constant(y)

    @tf.function  # traced once; eager execution cost ~4x more per epoch on a CPU
    def gradients():
        with tf.GradientTape() as tape:
            loss = loss_fn(y_fixed, model(x_fixed, training=True))
        return tape.gradient(loss, variables)

    def measure() -> list[dict]:
        saved = [v.numpy() for v in model.non_trainable_variables]
        grads = gradients()
        for var, value in zip(model.non_trainable_variables, saved, strict=True):
            var.assign(value)  # BatchNorm's moving statistics, as they were before measuring
        by_var = dict(zip((id(v) for v in variables), grads, strict=True))
        rows = []
        for layer in weighted:
            g = [by_var[id(v)] for v in layer.trainable_variables if by_var[id(v)] is not None]
            rows.append(dict(
                layer=layer.name,
                grad_norm=float(tf.linalg.global_norm(g)) if g else None,
                weight_norm=float(tf.linalg.global_norm([layer.kernel])),
            ))
        return rows

    return measure


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
        run = queries.find_run_or_raise(engine, run_id)
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
        if queries.heartbeat_run(engine, run_id):
            control.cancel.set()
        if validation is not None:
            validation = (as_tensor(validation[0]), validation[1])
        model.fit(as_tensor(x_fit), y_fit, batch_size=config.batch_size, epochs=config.epochs,
                  validation_data=validation, shuffle=True, verbose=0, callbacks=[callback])
        if callback.outcome is not None:
            status, reason = callback.outcome
            queries.finish_run(engine, run_id, status, error=reason)
            return status
        test_loss, test_accuracy = model.evaluate(data.x_test, data.y_test, batch_size=1000,
                                                  verbose=0)
        report = test_report(model, data)
        queries.finish_run(engine, run_id, "completed", test_loss=float(test_loss),
                           test_accuracy=float(test_accuracy),
                           test_report_json=json.dumps(report),
                           progress_batch=batches, progress_epoch=config.epochs)
        return "completed"
    except KeyboardInterrupt:
        queries.finish_run(engine, run_id, "cancelled", error="interrupted (Ctrl-C)")
        raise
    except Exception as exc:  # recorded on the run: the page and the CLI show it
        queries.finish_run(engine, run_id, "failed", error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc())
        return "failed"


def process_started_at() -> float | None:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # psutil missing or /proc unreadable: the log line just lacks this part
        return None


@dataclass
class RunControl:
    """Requests that reach a run from outside its training loop (threads, signals)."""

    cancel: threading.Event = field(default_factory=threading.Event)  # stop now: cancelled
    stop_after_epoch: threading.Event = field(default_factory=threading.Event)  # worker stopping


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
    interval = heartbeat_interval()

    def beat() -> None:
        while not done.wait(interval):
            if parent_pid is not None and os.getppid() != parent_pid:
                os._exit(70)
            try:
                if queries.heartbeat_run(engine, run_id):
                    control.cancel.set()
            except Exception:  # a busy database must not kill the run; the next beat retries
                pass

    queries.mark_running(engine, run_id, pid=os.getpid(), heartbeat_at=time.time(),
                         heartbeat_interval=interval)
    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        return train_run(engine, run_id, echo, control=control, started_at=process_started_at())
    finally:
        done.set()
