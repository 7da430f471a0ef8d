"""What a run records while it trains: the Keras callback that commits each epoch, reports
progress and honours cancel/stop requests and NaN losses; the per-layer norms measured at each
epoch end; and the requests that reach a run from outside its loop (`RunControl`)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from storage import lifecycle
from storage.engine import retry_when_locked
from storage.records import RunLost
from storage.status import CancelMode, RunStatus

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 1.0  # progress/cancel check at most this often (one DB write each)
DIAGNOSTIC_BATCH = 64  # fixed images for per-layer gradient/weight norms at each epoch end:
# enough for a stable trend, and cheap (benchmarks/recording_overhead.py measures the cost)


@dataclass
class RunControl:
    """Requests that reach a run from outside its training loop (threads, signals)."""

    cancel: threading.Event = field(default_factory=threading.Event)  # stop now: cancelled
    stop_after_epoch: threading.Event = field(default_factory=threading.Event)  # worker stopping
    lost: threading.Event = field(default_factory=threading.Event)  # the run was taken away


@dataclass(frozen=True)
class Outcome:
    """How training ended early. `status` QUEUED: requeue with a checkpoint (worker stopping);
    None: the run was lost (reaped or deleted elsewhere): nothing more may be written."""

    status: RunStatus | None
    reason: str


class RecordingCallback(keras.callbacks.Callback):
    """Commits each whole epoch, reports progress, honours cancel/stop requests, stops on NaN.

    A partial epoch (stopped mid-way by "stop now", divergence or a lost run) is never stored
    as if it were whole: only epochs that ran to their end are recorded.
    """

    async_safe = True  # batch hooks run on Keras' callback thread, so steps never wait on the DB

    def __init__(self, engine: Engine, run_id: int, worker_id: str, batches: int,
                 control: RunControl, diagnostics: Callable[[], list[dict]] | None = None,
                 echo: Callable[[str], None] | None = None,
                 interval: float = PROGRESS_INTERVAL_S):
        super().__init__()
        self.engine, self.run_id, self.worker_id = engine, run_id, worker_id
        self.batches, self.control = batches, control
        self.diagnostics, self.echo, self.interval = diagnostics, echo, interval
        self.outcome: Outcome | None = None  # once decided
        self.on_first_step: Callable[[float], None] | None = None
        self._lock = threading.Lock()
        self._epoch = 0
        self._epoch_start = time.monotonic()
        self._next_report = 0.0
        self._stopped_mid_epoch = False
        self.epochs_recorded = 0
        self.first_step_at: float | None = None  # wall time when the first batch ended

    def _stop(self, status: RunStatus | None, reason: str, mid_epoch: bool = False) -> None:
        if self.outcome is None:
            self.outcome = Outcome(status, reason)
        self._stopped_mid_epoch = self._stopped_mid_epoch or mid_epoch
        self.model.stop_training = True

    def _progress(self, batch: int, phase: str = "training") -> CancelMode | None:
        try:
            return lifecycle.report_progress(self.engine, self.run_id, self.worker_id, phase,
                                             self._epoch, batch, self.batches)
        except RunLost:
            self.control.lost.set()
        except SQLAlchemyError as exc:  # a busy database must not stop training: next time
            log.warning("progress of run %s not saved (%s)", self.run_id, exc)
        return None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._epoch = epoch + 1
        self._epoch_start = time.monotonic()
        self._progress(0)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
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
                self._stop(RunStatus.DIVERGED, f"loss became {loss} in epoch {self._epoch} "
                                               f"(seen at batch {batch + 1} of {self.batches})",
                           mid_epoch=True)
                return
            cancel = self._progress(batch + 1)
            if self.control.lost.is_set():
                self._stop(None, "the run was taken away", mid_epoch=True)
            elif cancel == CancelMode.NOW or self.control.cancel.is_set():
                self._stop(RunStatus.CANCELLED, f"cancelled by user (stopped in epoch "
                                                f"{self._epoch}; that partial epoch is not kept)",
                           mid_epoch=True)
        finally:
            self._lock.release()

    def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
        """Validation after each epoch: progress beats too, so a long one is not a hang."""
        now = time.monotonic()
        if now >= self._next_report and self._lock.acquire(blocking=False):
            try:
                self._next_report = now + self.interval
                self._progress(self.batches, phase="validating")
            finally:
                self._lock.release()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self._stopped_mid_epoch:
            return  # a partial epoch is not a result
        logs = logs or {}
        seconds = time.monotonic() - self._epoch_start
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            self._stop(RunStatus.DIVERGED, f"loss became {loss} in epoch {epoch + 1} (end of epoch)")
            return  # a NaN epoch is not recorded as a result
        stats = self.diagnostics() if self.diagnostics else None
        metrics = {k: _finite_or_none(logs.get(k))
                   for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        try:
            cancel = retry_when_locked(lambda: lifecycle.record_epoch(
                self.engine, self.run_id, self.worker_id, epoch + 1, metrics, seconds, stats),
                f"run {self.run_id}: saving epoch {epoch + 1}")
        except RunLost:
            self._stop(None, "the run was taken away")
            return
        self.epochs_recorded = epoch + 1
        if self.echo:
            self.echo(_epoch_line(epoch + 1, self.params.get("epochs"), metrics, seconds))
        last = epoch + 1 == self.params.get("epochs")
        if (cancel is not None or self.control.cancel.is_set()) and not last:
            self._stop(RunStatus.CANCELLED, f"cancelled by user after epoch {epoch + 1}")
        elif self.control.stop_after_epoch.is_set() and not last:
            self._stop(RunStatus.QUEUED, f"worker stopped after epoch {epoch + 1}")


def _finite_or_none(value):
    return float(value) if value is not None and math.isfinite(value) else None


def _epoch_line(epoch, epochs, m, seconds) -> str:
    def fmt(v):
        return "  n/a " if v is None else f"{v:.4f}"
    return (f"epoch {epoch}/{epochs}  loss {fmt(m['loss'])}  acc {fmt(m['accuracy'])}  "
            f"val_loss {fmt(m['val_loss'])}  val_acc {fmt(m['val_accuracy'])}  {seconds:.1f} s")


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
