"""What storage hands out: plain frozen dataclasses (never live ORM rows) and its "not found" errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from cnn_ablation.storage.status import RunStatus


class NotFound(LookupError):
    """A run or study id that does not exist: the one lookup error the CLI reports as bad input."""


class RunNotFound(NotFound):
    def __init__(self, run_id: int):
        super().__init__(f"run {run_id} does not exist")
        self.run_id = run_id


class RunLost(RuntimeError):
    """This process's run is no longer running under its worker (reaped, cancelled and
    finished, requeued or deleted): the process must stop writing to it."""

    def __init__(self, run_id: int):
        super().__init__(f"run {run_id} is no longer running under this process")
        self.run_id = run_id


class StudyNotFound(NotFound):
    def __init__(self, study_id: int):
        super().__init__(f"study {study_id} does not exist")
        self.study_id = study_id


@dataclass(frozen=True)
class NewRun:
    """What a queued run needs: filled by `cnn_ablation.jobs.launch` from a validated RunConfig."""

    config_json: str
    config_hash: str
    variant_hash: str
    label: str
    dataset: str
    preset: str
    seed: int
    epochs: int
    params: int | None
    name: str = ""
    study_id: int | None = None
    retry_of: int | None = None


@dataclass(frozen=True, kw_only=True)
class Run(NewRun):
    """A run as stored: what was queued plus its lifecycle, progress and results."""

    id: int
    status: RunStatus
    created_at: float
    started_at: float | None
    finished_at: float | None
    worker_id: str | None
    host: str | None
    pid: int | None
    device: str | None
    heartbeat_at: float | None
    heartbeat_interval: float | None
    cancel_requested: bool
    cancel_mode: str | None
    progress_at: float | None
    phase: str | None
    log_path: str | None
    checkpoint_path: str | None
    resume_epoch: int | None
    notes: str | None
    environment_json: str | None
    error: str | None
    traceback: str | None
    progress_epoch: int | None
    progress_batch: int | None
    progress_batches: int | None
    test_loss: float | None
    test_accuracy: float | None
    test_report_json: str | None
    tags: tuple[str, ...] = ()  # lower-case, sorted (stored as runs.tags_json)
    backend: str | None = None  # the Keras backend it trained on (set at claim); None: tensorflow
    comment: str | None = None  # the user's free-text note (`notes` is the lifecycle log)

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json)

    @property
    def environment(self) -> dict[str, Any] | None:
        """Where the run trained: library versions, device, host (to reproduce it later)."""
        return json.loads(self.environment_json) if self.environment_json else None

    @property
    def progress_text(self) -> str:
        """Where a run is, in words: "queued", "starting", "loading data", "epoch 3 of 10, batch
        120 of 1,407", "epoch 3 of 10: validating", "testing: 4,000 of 10,000 images"; for a
        finished run its status."""
        if self.status != RunStatus.RUNNING:
            return str(self.status)
        phase = self.phase or "starting"
        if phase == "testing":
            if self.progress_batches:
                return (f"testing: {self.progress_batch or 0:,} of {self.progress_batches:,} "
                        "images")
            return "testing"
        if phase not in ("training", "validating") or not self.progress_epoch:
            return phase
        text = f"epoch {self.progress_epoch:,} of {self.epochs:,}"
        if phase == "validating":
            return f"{text}: validating"
        if self.progress_batches:
            text += f", batch {self.progress_batch or 0:,} of {self.progress_batches:,}"
        return text

    @property
    def test_report(self) -> dict[str, Any] | None:
        return json.loads(self.test_report_json) if self.test_report_json else None


RUN_FIELDS = [f.name for f in fields(Run) if f.name != "tags"] + ["tags_json"]
NEW_RUN_FIELDS = [f.name for f in fields(NewRun)]


def run_from(source: Any) -> Run:
    """A `Run` from an ORM row or a result mapping holding every column of `runs`."""
    if isinstance(source, Mapping):
        values = {name: source[name] for name in RUN_FIELDS}
    else:
        values = {name: getattr(source, name) for name in RUN_FIELDS}
    values["status"] = RunStatus(values["status"])
    values["tags"] = tuple(json.loads(values.pop("tags_json") or "[]"))
    return Run(**values)


@dataclass(frozen=True)
class Study:
    id: int
    name: str
    spec_json: str
    created_at: float

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(self.spec_json)
