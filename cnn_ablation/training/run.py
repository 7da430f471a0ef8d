"""One training run: seeds, data split, compile as the chapter (or resume from a checkpoint), fit
with recording callbacks, one test pass. Every whole epoch is committed as it ends; the run ends
completed | failed | cancelled | diverged, or back in the queue with a checkpoint when its worker
stops (storage.status)."""

from __future__ import annotations

import importlib
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
from cnn_ablation.jobs import exit_codes
from cnn_ablation.networks.model import build_model
from cnn_ablation.settings import settings
from cnn_ablation.training.recording import (
    DIAGNOSTIC_BATCH,
    PROGRESS_INTERVAL_S,
    EventFiles,
    Outcome,
    RecordingCallback,
    RunControl,
    layer_norms,
)
from storage import lifecycle, runs, workers
from storage.engine import is_disk_full
from storage.records import Run, RunLost
from storage.status import CancelMode, RunStatus

log = logging.getLogger(__name__)

# Training steps per call into the backend (Keras' `steps_per_execution`): the same steps on the
# same batches in the same order, run 16 at a time inside one graph call, so Python's per-step
# work (the data iterator, the callbacks) is paid once per 16 steps. On this project's 2-core
# CPU a step of the chapter's network took ~20 % longer one at a time (benchmarks/
# throughput_memory.py). Only where steps are that short: the built-in networks on images up to
# 64 x 64 (a call of 16 steps well under a second on a CPU); your own networks and larger
# images take one step per call, since their steps are long enough for Python's share to vanish,
# and progress, stop-now and the hang check (ABLATION_NO_PROGRESS_SECONDS) act between calls.
# Keras on PyTorch runs one step per call only.
STEPS_PER_EXECUTION = 16
FAST_STEP_MAX_PIXELS = 64 * 64


def steps_per_execution(config: RunConfig, shape: tuple[int, ...]) -> int:
    """Steps per call for this run's model (see STEPS_PER_EXECUTION); batch callbacks see the
    last step of each call."""
    if keras.backend.backend() == "torch" or config.network is not None:
        return 1
    return STEPS_PER_EXECUTION if shape[0] * shape[1] <= FAST_STEP_MAX_PIXELS else 1


def split(config: RunConfig, data: datasets.Dataset):
    """Training limit, then a seeded shuffle split into fit and validation parts (still uint8).

    The images are not copied for the fit part: the rows it keeps are moved up, in their
    order, within the training array itself (`data.x_train` is reordered: a run loads its
    dataset once and splits it once), so the fit part is a view of its start, aligned and
    contiguous for `as_tensor`. Only the validation rows are copied out first (val_split of
    the images). The parts hold the same rows in the same order as copying them would."""
    x, y = data.x_train, data.y_train
    if config.limit_train:
        x, y = x[: config.limit_train], y[: config.limit_train]
    n_val = int(round(len(x) * config.val_split))
    if n_val == 0:
        return (x, y), None  # no copy: the arrays go to fit as they are
    order = np.random.default_rng(config.seed).permutation(len(x))
    fit_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
    validation = (_take(x, val_idx), y[val_idx])
    if not (x.flags.writeable and x.flags.c_contiguous):  # cannot reorder in place: copy
        return (_take(x, fit_idx), y[fit_idx]), validation
    _move_up(x, fit_idx)
    return (x[: len(fit_idx)], y[fit_idx]), validation


def _move_up(x: np.ndarray, idx: np.ndarray, chunk: int = 4096) -> None:
    """x[:len(idx)] = x[idx] in place, for ascending `idx` (so idx[i] >= i): each chunk's rows
    are gathered before they are written, and no later chunk reads a row written earlier."""
    for start in range(0, len(idx), chunk):
        stop = min(start + chunk, len(idx))
        x[start:stop] = x[idx[start:stop]]


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


def compiled_model(config: RunConfig, info: datasets.DatasetInfo) -> keras.Model:
    """The chapter's compile: Adam at the config's rate, cross-entropy, accuracy (your own
    network too: its variant is built by `surgery.build_custom`)."""
    if config.network is not None:
        from cnn_ablation.networks.surgery import build_custom

        model = build_custom(config, info.shape, info.num_classes)
    else:
        model = build_model(config, info.shape, info.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        # Integer labels: the same loss as the chapter's one-hot categorical cross-entropy,
        # without a float32 one-hot copy of the labels.
        loss="sparse_categorical_crossentropy",
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
    data: datasets.Dataset
    model: keras.Model
    x_fit: Any  # a tensor sharing memory with the uint8 images (`as_tensor`)
    y_fit: np.ndarray
    validation: tuple[Any, np.ndarray] | None
    recorder: RecordingCallback
    initial_epoch: int  # epochs a resumed checkpoint already holds
    batches: int  # training steps per epoch
    phases: dict[str, float]  # when start-up phases ended (the `startup` log line)

    def fit(self, callbacks: list[keras.callbacks.Callback] | None = None) -> Any:
        """`model.fit` as a run calls it. `callbacks` replaces `[self.recorder]` (benchmarks
        wrap the recorder in timers, or leave it out to measure what it costs)."""
        return self.model.fit(
            self.x_fit, self.y_fit, batch_size=self.config.batch_size, epochs=self.config.epochs,
            initial_epoch=self.initial_epoch, validation_data=self.validation, shuffle=True,
            verbose=0, callbacks=[self.recorder] if callbacks is None else callbacks)


class CheckpointMissing(RuntimeError):
    """A run went back to the queue with a checkpoint that this host cannot read (it is on the
    disk of the host whose worker stopped it, or was removed). The run fails saying so, before
    anything is loaded: starting again at epoch 1 under the same run would put a second
    training's epochs on the curve of the first, and its recorded epochs always stay."""

    def __init__(self, path: str | None, host: str, epochs: int):
        super().__init__(
            f"checkpoint {path or '(none)'} not found on {host}: the run cannot resume after "
            f"epoch {epochs} here (the checkpoint is on the disk of the host whose worker "
            f"stopped it, or was removed); its {epochs} epoch{'s' if epochs != 1 else ''} "
            "are kept; Retry queues it again as a new run from epoch 1")


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
    if resume and run.checkpoint_path:
        if config.network is not None:
            import cnn_ablation.networks.surgery  # noqa: F401 (registers SwitchedOff for loading)
        model = keras.models.load_model(run.checkpoint_path)  # weights and optimizer state
        lifecycle.add_note(engine, run.id, f"resumed at epoch {resume + 1} on "
                                           f"{socket.gethostname()} from its checkpoint")
    else:
        model = compiled_model(config, data.info)
    batches = math.ceil(len(x_fit) / config.batch_size)
    diag = layer_norms(model, x_fit[:DIAGNOSTIC_BATCH], y_fit[:DIAGNOSTIC_BATCH])
    phases["model_built"] = time.time()
    recorder = RecordingCallback(engine, run.id, worker_id, batches, control, diag, echo,
                                 interval, EventFiles(settings().tensorboard_dir(run.id)))
    if echo:
        recorder.on_first_step = lambda at: echo(_startup_line(phases, at, started_at))
    if validation is not None:
        validation = (as_tensor(validation[0]), validation[1])
    return TrainingSetup(config, data, model, as_tensor(x_fit), y_fit, validation, recorder,
                         resume, batches, phases)


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
    _remove_checkpoint(run.id)
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
            log.info("run %s: requeued with a checkpoint after epoch %s", run.id, epochs)
            return RunStatus.QUEUED
        return _lost(engine, run.id)
    if not lifecycle.finish(engine, run.id, outcome.status, worker_id=worker_id,
                            error=outcome.reason):
        return _lost(engine, run.id)
    _remove_checkpoint(run.id)
    return outcome.status


def _lost(engine: Engine, run_id: int) -> RunStatus:
    """The run was finished or taken elsewhere (reaped, cancelled, deleted): write nothing more,
    and report what the database says, never "completed" on our own account."""
    now = runs.find_run(engine, run_id)
    status = now.status if now else RunStatus.FAILED
    log.warning("run %s is no longer ours (now %s); stopped without writing", run_id,
                now.status if now else "deleted")
    return status


def checkpoint_path(run_id: int) -> Path:
    return settings().home / "checkpoints" / f"run-{run_id}.keras"


def _remove_checkpoint(run_id: int) -> None:
    checkpoint_path(run_id).unlink(missing_ok=True)


class TestProgress(keras.callbacks.Callback):
    """Progress beats while the test set is predicted ("testing: 4,000 of 10,000 images")."""

    def __init__(self, engine: Engine, run_id: int, worker_id: str, batch_size: int = 1000):
        super().__init__()
        self.engine, self.run_id, self.worker_id = engine, run_id, worker_id
        self.batch_size = batch_size
        self.total = 0
        self.epoch: int | None = None

    def on_predict_batch_end(self, batch: int, logs: Any = None) -> None:
        done = min((batch + 1) * self.batch_size, self.total)
        lifecycle.report_progress(self.engine, self.run_id, self.worker_id, "testing",
                                  self.epoch, done, self.total)


def test_metrics(model: keras.Model, data: datasets.Dataset,
                 progress: TestProgress | None = None) -> tuple[float, float, dict]:
    """Test loss, accuracy and confusion matrix from one pass over the test set (`predict`),
    computed as Keras' `evaluate` computes them (tests check they agree to 1e-6)."""
    callbacks = []
    if progress is not None:
        progress.total = len(data.y_test)
        callbacks.append(progress)
    if model.steps_per_execution != 1:  # one call per 1,000 images: progress after each
        model.steps_per_execution = 1
        model.make_predict_function(force=True)
    probs = model.predict(data.x_test, batch_size=1000, verbose=0, callbacks=callbacks)
    labels = data.y_test.astype(np.int64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # as Keras' cross-entropy does
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1 - 1e-7)
    loss = float(np.mean(-np.log(picked.astype(np.float64))))
    predicted = np.argmax(probs, axis=1)
    accuracy = float(np.mean(predicted == labels))
    k = data.info.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    report = {"class_names": list(data.info.class_names), "confusion": confusion.tolist()}
    return loss, accuracy, report


def configure_gpus(memory_limit_mb: int | None) -> None:
    """Before any TensorFlow op: grow GPU memory as needed rather than taking it all, or, when a
    worker shares a GPU between K runs, cap this process at its share."""
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        if memory_limit_mb is not None:
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)])
        else:
            tf.config.experimental.set_memory_growth(gpu, True)


def environment() -> dict[str, Any]:
    """What a result depends on besides its config: Keras, its backend (name and the version of
    the library behind it: tensorflow, jax or torch), numpy, Python, the platform, the GPUs this
    process sees and the device it trains on. Imports only the backend Keras runs on."""
    import platform

    backend = keras.backend.backend()
    version, gpus = _backend_version_and_gpus(backend)
    return {"python": platform.python_version(), "keras": keras.__version__,
            "keras_backend": backend, "backend_version": version, backend: version,
            "numpy": np.__version__, "host": socket.gethostname(),
            "platform": platform.platform(), "gpus": gpus, "device": gpus[0] if gpus else "cpu",
            "visible_gpus": settings().visible_gpus}


def _backend_version_and_gpus(backend: str) -> tuple[str, list[str]]:
    """The backend library's version and the GPUs it sees, asked of that library alone."""
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.__version__, [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":  # imported by name: neither is installed here, nor typed for mypy
        jax = importlib.import_module("jax")
        return jax.__version__, [str(d) for d in jax.devices() if d.platform != "cpu"]
    if backend == "torch":
        torch = importlib.import_module("torch")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return torch.__version__, [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                                   for i in range(count)]
    return np.__version__, []  # "numpy" (inference only): nothing behind it but numpy


def process_started_at() -> float | None:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # psutil missing or /proc unreadable: the log line just lacks this part
        return None


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
