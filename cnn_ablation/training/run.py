"""One training run: seeds, data split, compile as the chapter (or resume from a checkpoint), fit
with recording callbacks, one test pass. Every whole epoch is committed as it ends; the run ends
completed | failed | cancelled | diverged, or back in the queue with a checkpoint when its worker
stops (storage.status)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sqlalchemy import Engine

from cnn_ablation.config import RunConfig
from cnn_ablation.data import datasets
from cnn_ablation.data.arrays import Dataset, DatasetInfo
from cnn_ablation.jobs import exit_codes
from cnn_ablation.networks.model import build_model
from cnn_ablation.settings import settings
from cnn_ablation.storage import lifecycle, runs, workers
from cnn_ablation.storage.engine import is_disk_full
from cnn_ablation.storage.records import Run, RunLost
from cnn_ablation.storage.status import CancelMode, RunStatus
from cnn_ablation.training.checkpoint import CheckpointMissing, checkpoint_path, remove_checkpoint
from cnn_ablation.training.environment import configure_gpus, environment, process_started_at
from cnn_ablation.training.evaluation import TestProgress, test_metrics
from cnn_ablation.training.pipeline import (
    EpochBatches,
    EpochStart,
    as_tensor,
    split,
    steps_per_execution,
)
from cnn_ablation.training.recording import (
    DIAGNOSTIC_BATCH,
    PROGRESS_INTERVAL_S,
    EventFiles,
    Outcome,
    RecordingCallback,
    RunControl,
    layer_norms,
)

log = logging.getLogger(__name__)


def compiled_model(config: RunConfig, info: DatasetInfo) -> keras.Model:
    """The chapter's compile: Adam at the config's rate, cross-entropy, accuracy (your own
    network too: its variant is built by `surgery.build_custom`)."""
    logits = False
    if config.network is not None:
        from cnn_ablation.networks.surgery import build_custom, output_kind

        model = build_custom(config, info.shape, info.num_classes)
        logits = output_kind(model) == "logits"  # no softmax: the loss applies it
    else:
        model = build_model(config, info.shape, info.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        # Integer labels: the same loss as the chapter's one-hot categorical cross-entropy,
        # without a float32 one-hot copy of the labels.
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=logits),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution(config, info.shape),
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
              started_at: float | None = None) -> RunStatus:
    """Train run `run_id` (already `running` under its worker) to its final status, which is
    returned; a run with a checkpoint resumes after the epochs it holds. `started_at`: when this
    process started, to report its start-up time in the log."""
    control = control or RunControl()
    run = runs.find_run_or_raise(engine, run_id)
    worker_id = run.worker_id or ""
    try:
        return _train(engine, run, worker_id, echo, interval, control, started_at)
    except RunLost:
        return _lost(engine, run_id)
    except KeyboardInterrupt:
        lifecycle.finish(engine, run_id, RunStatus.CANCELLED, worker_id=worker_id,
                         error="interrupted (Ctrl-C)")
        raise
    except Exception as exc:  # recorded on the run: the page and the CLI show it
        log.exception("run %s failed", run_id)
        error = f"{type(exc).__name__}: {exc}"
        if is_disk_full(exc):
            error = f"disk full: {exc}"
        try:
            lifecycle.finish(engine, run_id, RunStatus.FAILED, worker_id=worker_id, error=error,
                             traceback=traceback.format_exc())
        except Exception:
            if is_disk_full(exc):  # cannot even record it: the worker will, from our exit code
                raise SystemExit(exit_codes.DISK_FULL) from exc
            raise
        return RunStatus.FAILED


@dataclass
class TrainingSetup:
    """Everything one run's `fit` needs, set up as the run sets it up (`prepare_training`):
    its data split, its model (compiled, or resumed from a checkpoint), and the recording
    callback with its per-layer diagnostics. The benchmarks call the same function."""

    config: RunConfig
    data: Dataset
    model: keras.Model
    x_fit: np.ndarray  # the fit part's uint8 images (a view: `split`)
    y_fit: np.ndarray
    epoch_batches: EpochBatches  # what fit trains on: each epoch in its own order
    validation: tuple[Any, np.ndarray] | None
    recorder: RecordingCallback
    initial_epoch: int  # epochs a resumed checkpoint already holds
    batches: int  # training steps per epoch
    phases: dict[str, float]  # when start-up phases ended (the `startup` log line)

    def fit(self, callbacks: list[keras.callbacks.Callback] | None = None) -> Any:
        """`model.fit` as a run calls it. `callbacks` replaces `[self.recorder]` (benchmarks
        wrap the recorder in timers, or leave it out to measure what it costs); the epoch
        start (this epoch's order, the random ops reseeded) always comes first."""
        start = EpochStart(self.epoch_batches, self.config.seed)
        return self.model.fit(
            self.epoch_batches, epochs=self.config.epochs, initial_epoch=self.initial_epoch,
            # shuffle=False: the order is `epoch_batches`' alone. Keras' own shuffle of a
            # PyDataset reorders its batches with Python's `random`, whose state a resumed
            # process does not share (measured: two loads of one checkpoint, two losses).
            validation_data=self.validation, shuffle=False, verbose=0,
            callbacks=[start, *([self.recorder] if callbacks is None else callbacks)])


def prepare_training(engine: Engine, run: Run, worker_id: str, control: RunControl,
                     echo: Callable[[str], None] | None = None,
                     interval: float = PROGRESS_INTERVAL_S,
                     started_at: float | None = None) -> TrainingSetup:
    """Seed, load the dataset, split it, build and compile the model (or load the run's
    checkpoint), and make the recording callback with its per-layer diagnostics."""
    config = RunConfig.from_json(run.config_json)
    resume = run.resume_epoch or 0
    if resume and not (run.checkpoint_path and Path(run.checkpoint_path).exists()):
        raise CheckpointMissing(run.checkpoint_path, socket.gethostname(), resume)
    keras.utils.set_random_seed(config.seed)
    phases = {"start": time.time()}
    lifecycle.report_progress(engine, run.id, worker_id, "loading data", None, None, None)
    data = datasets.load(config.dataset, config.image_size)
    phases["dataset_loaded"] = time.time()
    (x_fit, y_fit), validation = split(config, data)
    _record_dataset(engine, run, worker_id, data, len(y_fit),
                    0 if validation is None else len(validation[1]))
    if resume and run.checkpoint_path:
        if config.network is not None:
            import cnn_ablation.networks.surgery  # noqa: F401 (registers SwitchedOff for loading)
        model = keras.models.load_model(run.checkpoint_path)  # weights and optimizer state
        lifecycle.add_note(engine, run.id, f"resumed at epoch {resume + 1} on "
                                           f"{socket.gethostname()} from its checkpoint")
    else:
        model = compiled_model(config, data.info)
        if getattr(model.loss, "from_logits", False):
            lifecycle.add_note(engine, run.id, "the network's output is logits (no softmax): "
                                               "trained with the cross-entropy taken from_logits")
    batches = math.ceil(len(x_fit) / config.batch_size)
    diag = layer_norms(model, x_fit[:DIAGNOSTIC_BATCH], y_fit[:DIAGNOSTIC_BATCH])
    phases["model_built"] = time.time()
    recorder = RecordingCallback(engine, run.id, worker_id, batches, control, diag, echo,
                                 interval, EventFiles(settings().tensorboard_dir(run.id)))
    if echo:
        recorder.on_first_step = lambda at: echo(_startup_line(phases, at, started_at))
    if validation is not None:
        validation = (as_tensor(validation[0]), validation[1])
    epoch_batches = EpochBatches(x_fit, y_fit, config.batch_size, config.seed)
    return TrainingSetup(config, data, model, x_fit, y_fit, epoch_batches, validation, recorder,
                         resume, batches, phases)


def _record_dataset(engine: Engine, run: Run, worker_id: str, data: Dataset, fit: int,
                    validation: int) -> None:
    """What the run trained on, beside its environment: the images it used (after limit and
    split) of how many, and a folder's digest (its files as they were when read)."""
    facts = {"name": data.info.name, "train_images": data.info.train_size,
             "used_images": fit + validation, "fit_images": fit,
             "validation_images": validation, "test_images": len(data.y_test),
             "image_shape": list(data.info.shape), "digest": data.info.digest}
    environment = {**(run.environment or {}), "dataset": facts}
    lifecycle.attach_process(engine, run.id, worker_id, os.getpid(), environment=environment)


def _train(engine: Engine, run: Run, worker_id: str, echo: Callable[[str], None] | None,
           interval: float, control: RunControl, started_at: float | None) -> RunStatus:
    setup = prepare_training(engine, run, worker_id, control, echo, interval, started_at)
    try:
        return _fit_and_test(engine, run, worker_id, setup, control)
    finally:
        if setup.recorder.events:
            setup.recorder.events.close()


def _fit_and_test(engine: Engine, run: Run, worker_id: str, setup: TrainingSetup,
                  control: RunControl) -> RunStatus:
    config, data, callback = setup.config, setup.data, setup.recorder
    if lifecycle.beat(engine, run.id, worker_id) == CancelMode.NOW:
        control.cancel.set()
    setup.fit()
    if callback.outcome is not None:
        return _ended_early(engine, run, worker_id, setup.model, callback.outcome, callback)
    lifecycle.report_progress(engine, run.id, worker_id, "testing", config.epochs, 0,
                              len(data.y_test))
    loss, accuracy, report = test_metrics(setup.model, data,
                                          TestProgress(engine, run.id, worker_id))
    if callback.events:
        callback.events.test(config.epochs, loss, accuracy)
    if not lifecycle.finish(engine, run.id, RunStatus.COMPLETED, worker_id=worker_id,
                            test_loss=loss, test_accuracy=accuracy,
                            test_report_json=json.dumps(report), progress_batch=setup.batches,
                            progress_epoch=config.epochs):
        return _lost(engine, run.id)
    remove_checkpoint(run.id)
    return RunStatus.COMPLETED


def _ended_early(engine: Engine, run: Run, worker_id: str, model: keras.Model,
                 outcome: Outcome, callback: RecordingCallback) -> RunStatus:
    if outcome.status is None:
        return _lost(engine, run.id)
    if outcome.status == RunStatus.QUEUED:  # the worker is stopping: checkpoint, back in line
        epochs = callback.epochs_recorded
        path = checkpoint_path(run.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        if lifecycle.requeue(engine, run.id, worker_id, str(path), epochs,
                             f"{outcome.reason}: checkpoint saved, back in the queue"):
            now = runs.find_run(engine, run.id)
            if now is not None and now.status == RunStatus.CANCELLED:  # cancelled meanwhile
                remove_checkpoint(run.id)
                log.info("run %s: cancelled while going back to the queue", run.id)
                return RunStatus.CANCELLED
            log.info("run %s: requeued with a checkpoint after epoch %s", run.id, epochs)
            return RunStatus.QUEUED
        return _lost(engine, run.id)
    if not lifecycle.finish(engine, run.id, outcome.status, worker_id=worker_id,
                            error=outcome.reason):
        return _lost(engine, run.id)
    remove_checkpoint(run.id)
    return outcome.status


def _lost(engine: Engine, run_id: int) -> RunStatus:
    """The run was finished or taken elsewhere (reaped, cancelled, deleted): write nothing more,
    and report what the database says, never "completed" on our own account."""
    now = runs.find_run(engine, run_id)
    status = now.status if now else RunStatus.FAILED
    log.warning("run %s is no longer ours (now %s); stopped without writing", run_id,
                now.status if now else "deleted")
    return status


def execute(engine: Engine, run_id: int, echo: Callable[[str], None] | None = None,
            parent_pid: int | None = None, own_worker: bool = False) -> RunStatus:
    """Train a `running` run in this process with a heartbeat thread beside it.

    The thread keeps the run's heartbeat fresh while data loads or a long epoch runs, passes a
    stop-now cancel to the training loop, notices when the run was taken away, and ends this
    process at once if `parent_pid` (the worker) is gone, so that a killed worker's run is
    reported "worker lost" instead of going on unowned. SIGTERM asks the run to stop after the
    current epoch and go back to the queue with a checkpoint. `own_worker`: this process is
    its own worker (the foreground `train`), registered and beating as one.
    """
    control = RunControl()
    signal.signal(signal.SIGTERM, lambda *_: control.stop_after_epoch.set())
    done = threading.Event()
    interval = settings().heartbeat_s
    configure_gpus(settings().gpu_memory_mb)
    run = runs.find_run_or_raise(engine, run_id)
    worker_id = run.worker_id or ""
    if exit_codes.SIGTERM_WHILE_STARTING.is_set() and not own_worker:
        # the worker stopped while this process was still importing: straight back to the
        # queue, as it was claimed (its checkpoint, if any, kept for the next worker)
        if lifecycle.requeue(engine, run_id, worker_id, run.checkpoint_path,
                             run.resume_epoch or 0, "stopped while starting: back in the queue"):
            log.info("run %s: SIGTERM while starting; back in the queue", run_id)
            return runs.find_run_or_raise(engine, run_id).status
        return _lost(engine, run_id)
    if own_worker:
        workers.register_worker(engine, worker_id, socket.gethostname(), os.getpid(),
                                "foreground")

    def beat() -> None:
        while not done.wait(interval):
            if parent_pid is not None and os.getppid() != parent_pid:
                os._exit(exit_codes.PARENT_GONE)
            try:
                if own_worker:
                    workers.heartbeat_worker(engine, worker_id)
                if lifecycle.beat(engine, run_id, worker_id) == CancelMode.NOW:
                    control.cancel.set()
            except RunLost:
                control.lost.set()
                return
            except Exception:  # a busy database must not kill the run; the next beat retries
                log.warning("heartbeat of run %s failed; retrying in %g s", run_id, interval,
                            exc_info=True)

    lifecycle.attach_process(engine, run_id, worker_id, os.getpid(), environment=environment())
    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        return train_run(engine, run_id, echo, control=control, started_at=process_started_at())
    finally:
        done.set()
        if own_worker:
            workers.stop_worker(engine, worker_id)
