"""ORM tables (SQLAlchemy 2 typed style). Times are UNIX seconds (float): heartbeats compare simply."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    DDL,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import CreateIndex

from cnn_ablation.storage.status import RunStatus


class Base(DeclarativeBase):
    """The project's tables; `storage.engine` creates them on first use."""


class StudyRow(Base):
    __tablename__ = "studies"
    __table_args__ = {"sqlite_autoincrement": True}  # an id is never given out twice

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec_json: Mapped[str] = mapped_column(Text)  # the StudySpec: base config, factors, design, seeds
    created_at: Mapped[float] = mapped_column(Float)


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in RunStatus) + ")", name="run_status"
        ),
        {"sqlite_autoincrement": True},  # a deleted run's id (and its log) is never reused
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    study_id: Mapped[int | None] = mapped_column(
        ForeignKey("studies.id", ondelete="SET NULL"), index=True
    )
    retry_of: Mapped[int | None] = mapped_column(Integer)
    config_json: Mapped[str] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(32), index=True)
    variant_hash: Mapped[str] = mapped_column(String(32))  # indexed with its label: below
    label: Mapped[str] = mapped_column(String(200))
    dataset: Mapped[str] = mapped_column(String(500))
    preset: Mapped[str] = mapped_column(String(50))
    seed: Mapped[int] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)
    params: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=RunStatus.QUEUED.value,
                                        index=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    device: Mapped[str | None] = mapped_column(String(100))
    # Keras' backend ("jax"; "tensorflow+jax": resumed on another); None: tensorflow
    backend: Mapped[str | None] = mapped_column(String(40))
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_interval: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_mode: Mapped[str | None] = mapped_column(String(16))  # "after_epoch" | "now"
    progress_at: Mapped[float | None] = mapped_column(Float)  # last beat from the training loop
    phase: Mapped[str | None] = mapped_column(String(20))  # "starting" | "training" | "testing"
    log_path: Mapped[str | None] = mapped_column(String(500))
    checkpoint_path: Mapped[str | None] = mapped_column(String(500))  # set while requeued
    resume_epoch: Mapped[int | None] = mapped_column(Integer)  # epochs the checkpoint holds
    notes: Mapped[str | None] = mapped_column(Text)  # lifecycle events, one per line
    environment_json: Mapped[str | None] = mapped_column(Text)  # versions, device, host
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    progress_epoch: Mapped[int | None] = mapped_column(Integer)  # 1-based epoch now training
    progress_batch: Mapped[int | None] = mapped_column(Integer)
    progress_batches: Mapped[int | None] = mapped_column(Integer)
    test_loss: Mapped[float | None] = mapped_column(Float)
    test_accuracy: Mapped[float | None] = mapped_column(Float)
    test_report_json: Mapped[str | None] = mapped_column(Text)  # confusion matrix, per class
    tags_json: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")  # lower-case
    comment: Mapped[str | None] = mapped_column(Text)  # the user's free-text note
    # The run's epoch aggregates, kept by lifecycle.record_epoch in the epoch's own transaction
    # (storage.listings.store_epoch_aggregates recomputes them from epoch_metrics): listings sort,
    # filter and show them through the indexes below instead of aggregating every run's epochs.
    epochs_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    best_val_accuracy: Mapped[float | None] = mapped_column(Float)  # max over its epochs
    last_epoch: Mapped[int | None] = mapped_column(Integer)  # its highest epoch recorded
    final_val_accuracy: Mapped[float | None] = mapped_column(Float)  # that epoch's values
    final_accuracy: Mapped[float | None] = mapped_column(Float)
    final_val_loss: Mapped[float | None] = mapped_column(Float)


# Listings sort by these, best first with runs lacking the value last, ties newest first
# (storage.listings.SORTS): the index is that order, so a page reads its 50 entries and stops.
for _column in ("best_val_accuracy", "final_val_accuracy", "test_accuracy"):
    Index(f"ix_runs_{_column}", RunRow.__table__.c[_column].desc().nulls_last(),
          RunRow.__table__.c.id.desc())
# Compare lists every config (variant) with its label, dataset and runs: from this index alone
# (the id too: PostgreSQL's indexes hold only the columns named); it also finds a variant's runs.
Index("ix_runs_variant", RunRow.variant_hash, RunRow.label, RunRow.dataset, RunRow.id)
# The Runs page's dataset filter lists the datasets in use: from this index alone.
Index("ix_runs_dataset", RunRow.dataset)
# Its tag filter lists the tags in use: only runs that have tags are in this index, so the
# question costs what the tagged runs cost, however many runs have none.
Index("ix_runs_tagged", RunRow.tags_json, sqlite_where=RunRow.tags_json != "[]",
      postgresql_where=RunRow.tags_json != "[]")


@compiles(CreateIndex, "sqlite")
def _sqlite_index(create: CreateIndex, compiler: Any, **kw: Any) -> str:
    """SQLite refuses NULLS LAST in an index; its descending order puts NULLs last already,
    which is what the words ask (PostgreSQL's descending order puts them first)."""
    return compiler.visit_create_index(create, **kw).replace(" DESC NULLS LAST", " DESC")


class EpochMetricRow(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("run_id", "epoch", name="uq_epoch_metrics_run_epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)  # 1-based, as Keras prints it
    loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[float] = mapped_column(Float)


class StepMetricRow(Base):
    """Training loss (and accuracy) within an epoch, sampled at most once a second."""

    __tablename__ = "step_metrics"
    __table_args__ = {"sqlite_with_rowid": False}  # SQLite: rows stored once, in key order

    # The (run_id, step) key's index also serves lookups by run_id: no second index.
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"),
                                        primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)  # global batch, 1-based
    epoch: Mapped[int] = mapped_column(Integer)  # 1-based
    loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    recorded_at: Mapped[float] = mapped_column(Float)


class LayerStatRow(Base):
    """Per-layer gradient and weight norms at the end of an epoch, on a fixed batch."""

    __tablename__ = "layer_stats"
    __table_args__ = (UniqueConstraint("run_id", "epoch", "layer", name="uq_layer_stats"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    layer: Mapped[str] = mapped_column(String(50))
    grad_norm: Mapped[float | None] = mapped_column(Float)
    weight_norm: Mapped[float | None] = mapped_column(Float)


class RunDeletionsRow(Base):
    """How many times runs were deleted, in its one row (id 1): with the highest run id, what
    tells a page that runs were added or deleted without counting the runs (at 100,000 runs
    that count was most of what pages ask every second)."""

    __tablename__ = "run_deletions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deletions: Mapped[int] = mapped_column(Integer, default=0)


event.listen(RunDeletionsRow.__table__, "after_create",
             DDL("INSERT INTO run_deletions (id, deletions) VALUES (1, 0)"))


class WorkerRow(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    slots: Mapped[str] = mapped_column(String(200), default="")  # e.g. "gpu:0,gpu:1" or "cpu"
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    stopped_at: Mapped[float | None] = mapped_column(Float)
    # who it is on its own host's terms (see storage.workers.this_host, process_started)
    host_id: Mapped[str | None] = mapped_column(String(200))
    process_started_at: Mapped[float | None] = mapped_column(Float)
