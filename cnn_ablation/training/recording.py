"""What a run records while it trains: the Keras callback that commits each epoch, reports
progress, samples the training loss within epochs (steps), and honours cancel/stop requests and
NaN losses; the run's TensorBoard event files (`EventFiles`); the per-layer norms measured at
each epoch end; and the requests that reach a run from outside its loop (`RunControl`)."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from cnn_ablation.storage import lifecycle
from cnn_ablation.storage.engine import retry_when_locked
from cnn_ablation.storage.records import RunLost
from cnn_ablation.storage.status import CancelMode, RunStatus

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 1.0  # progress/cancel check at most this often (one DB write each)
STEP_FLUSH_S = 5.0  # sampled steps (one per progress beat) are written this often, in one INSERT
MAX_BUFFERED_STEPS = 1000  # while the database is busy: the oldest samples beyond this are dropped
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
                 interval: float = PROGRESS_INTERVAL_S, events: EventFiles | None = None,
                 step_flush: float = STEP_FLUSH_S):
        super().__init__()
        self.engine, self.run_id, self.worker_id = engine, run_id, worker_id
        self.batches, self.control = batches, control
        self.diagnostics, self.echo, self.interval = diagnostics, echo, interval
        self.events, self.step_flush = events, step_flush
        self._steps: dict[int, tuple[int, int, float | None, float | None]] = {}
        self._steps_lock = threading.Lock()  # the callback thread samples, epoch ends flush
        self._next_flush = time.monotonic() + step_flush
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
        """`batch`: the last step of the steps run in one call (training.pipeline.STEPS_PER_EXECUTION);
        Keras numbers a short last call of an epoch as if it were whole."""
        batch = min(batch, self.batches - 1)
        now = time.monotonic()
        if now < self._next_report or not self._lock.acquire(blocking=False):
            return  # the first call always passes: _next_report starts at 0
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
            self._sample(batch, logs or {})
            cancel = self._progress(batch + 1)
            if now >= self._next_flush:
                self._next_flush = now + self.step_flush
                self.flush_steps()
            if self.control.lost.is_set():
                self._stop(None, "the run was taken away", mid_epoch=True)
            elif cancel == CancelMode.NOW or self.control.cancel.is_set():
                self._stop(RunStatus.CANCELLED, f"cancelled by user (stopped in epoch "
                                                f"{self._epoch}; that partial epoch is not kept)",
                           mid_epoch=True)
        finally:
            self._lock.release()

    def _sample(self, batch: int, logs: Any) -> None:
        """Buffer this batch's running loss and accuracy (Keras' averages over the epoch so
        far) at its global step, 1-based from the start of training."""
        step = (self._epoch - 1) * self.batches + batch + 1
        row = (self._epoch, step, _finite_or_none(logs.get("loss")),
               _finite_or_none(logs.get("accuracy")))
        with self._steps_lock:
            self._steps[step] = row
            while len(self._steps) > MAX_BUFFERED_STEPS:
                del self._steps[next(iter(self._steps))]

    def flush_steps(self) -> None:
        """Write the buffered samples in one INSERT (and to the event files); on a busy
        database they stay buffered for the next flush."""
        with self._steps_lock:
            rows = sorted(self._steps.values(), key=lambda row: row[1])
            if not rows:
                return
            try:
                lifecycle.record_steps(self.engine, self.run_id, self.worker_id, rows)
            except RunLost:
                self.control.lost.set()
                self._steps.clear()
                return
            except SQLAlchemyError as exc:
                log.warning("steps of run %s not saved yet (%s)", self.run_id, exc)
                return
            self._steps.clear()
        if self.events:
            self.events.steps(rows)

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
        with self._steps_lock:  # the epoch's last step: the step curve ends on its epoch's loss
            step = (epoch + 1) * self.batches
            self._steps[step] = (epoch + 1, step, metrics["loss"], metrics["accuracy"])
        self.flush_steps()
        try:
            cancel = retry_when_locked(lambda: lifecycle.record_epoch(
                self.engine, self.run_id, self.worker_id, epoch + 1, metrics, seconds, stats),
                f"run {self.run_id}: saving epoch {epoch + 1}")
        except RunLost:
            self._stop(None, "the run was taken away")
            return
        self.epochs_recorded = epoch + 1
        if self.events:
            self.events.epoch(epoch + 1, metrics)
        if self.echo:
            self.echo(_epoch_line(epoch + 1, self.params.get("epochs"), metrics, seconds))
        last = epoch + 1 == self.params.get("epochs")
        if (cancel is not None or self.control.cancel.is_set()) and not last:
            self._stop(RunStatus.CANCELLED, f"cancelled by user after epoch {epoch + 1}")
        elif self.control.stop_after_epoch.is_set() and not last:
            self._stop(RunStatus.QUEUED, f"worker stopped after epoch {epoch + 1}")

    def on_train_end(self, logs: Any = None) -> None:
        """A run stopped mid-epoch (stop now, divergence) keeps the steps it sampled."""
        if not self.control.lost.is_set():
            self.flush_steps()


class EventFiles:
    """TensorBoard event files of one run, laid out as Keras' TensorBoard callback lays them
    out, so the same habits work: `train/` (epoch_loss, epoch_accuracy per epoch; batch_loss,
    batch_accuracy at sampled global steps), `validation/` (epoch_loss, epoch_accuracy) and
    `test/` (epoch_loss, epoch_accuracy at the last epoch). Written with tf.summary in the
    training process only; a failure to write them is logged once and never stops a run."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self._writers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._failed = False

    def _write(self, part: str, values: list[tuple[str, float | None, int]]) -> None:
        if self._failed or keras.backend.backend() != "tensorflow":
            return
        import tensorflow as tf
        from tensorflow.core.framework.summary_pb2 import SummaryMetadata

        # What tensorboard's own `scalar` writes (its scalars plugin, data version 0), through
        # TensorFlow's generic summary op: no need for the tensorboard package to write them.
        scalar = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))
        with self._lock:
            try:
                writer = self._writers.get(part)
                if writer is None:
                    writer = tf.summary.create_file_writer(str(self.logdir / part))
                    self._writers[part] = writer
                with writer.as_default():
                    for name, value, step in values:
                        if value is not None:
                            tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                                             metadata=scalar)
                writer.flush()
            except Exception as exc:  # a full or read-only disk: the database still has it all
                self._failed = True
                log.warning("TensorBoard files of %s not written (%s)", self.logdir, exc)

    def steps(self, rows: list[tuple[int, int, float | None, float | None]]) -> None:
        self._write("train", [(name, value, step) for _, step, loss, accuracy in rows
                              for name, value in (("batch_loss", loss),
                                                  ("batch_accuracy", accuracy))])

    def epoch(self, epoch: int, metrics: dict[str, float | None]) -> None:
        self._write("train", [("epoch_loss", metrics.get("loss"), epoch),
                              ("epoch_accuracy", metrics.get("accuracy"), epoch)])
        self._write("validation", [("epoch_loss", metrics.get("val_loss"), epoch),
                                   ("epoch_accuracy", metrics.get("val_accuracy"), epoch)])

    def test(self, epoch: int, loss: float | None, accuracy: float | None) -> None:
        self._write("test", [("epoch_loss", _finite_or_none(loss), epoch),
                             ("epoch_accuracy", _finite_or_none(accuracy), epoch)])

    def close(self) -> None:
        with self._lock:
            for writer in self._writers.values():
                with contextlib.suppress(Exception):  # reported when it failed to write
                    writer.close()
            self._writers.clear()


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
