"""Runs: create, find, list, delete. State changes after creation live in `storage.lifecycle`."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, delete, select, update
from sqlalchemy.orm import Session

from cnn_ablation.storage.clock import db_now
from cnn_ablation.storage.engine import session_scope
from cnn_ablation.storage.models import (
    EpochMetricRow,
    LayerStatRow,
    RunDeletionsRow,
    RunRow,
    StepMetricRow,
)
from cnn_ablation.storage.records import NewRun, Run, RunNotFound, run_from
from cnn_ablation.storage.status import RunStatus


def create_runs(engine: Engine, new_runs: list[NewRun]) -> list[int]:
    """Queue runs in one transaction (all or nothing); returns their ids in order."""
    now = db_now()
    ids = []
    with session_scope(engine) as session:
        for new in new_runs:
            row = RunRow(**asdict(new), status=RunStatus.QUEUED.value, created_at=now,
                         cancel_requested=False)
            session.add(row)
            session.flush()
            ids.append(row.id)
    return ids


def find_run(engine: Engine, run_id: int) -> Run | None:
    with session_scope(engine, write=False) as session:
        row = session.get(RunRow, run_id)
        return run_from(row) if row else None


def find_run_or_raise(engine: Engine, run_id: int) -> Run:
    run = find_run(engine, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def list_runs(
    engine: Engine,
    statuses: list[str] | None = None,
    datasets: list[str] | None = None,
    study_id: int | None = None,
    ids: list[int] | None = None,
    config_hashes: list[str] | None = None,
) -> list[Run]:
    """Runs in id order, narrowed by any of the filters given."""
    query = select(RunRow).order_by(RunRow.id)
    if config_hashes is not None:
        query = query.where(RunRow.config_hash.in_(config_hashes))
    if statuses:
        query = query.where(RunRow.status.in_(statuses))
    if datasets:
        query = query.where(RunRow.dataset.in_(datasets))
    if study_id is not None:
        query = query.where(RunRow.study_id == study_id)
    if ids is not None:
        query = query.where(RunRow.id.in_(ids))
    with session_scope(engine, write=False) as session:
        return [run_from(row) for row in session.scalars(query)]


def delete_runs(engine: Engine, run_ids: Sequence[int]) -> list[Run]:
    """Delete runs with their epochs, steps and norms in one transaction, all or nothing:
    RunNotFound for a missing id, ValueError naming the running ones (cancel them first).
    Returns the runs as they were (their log and checkpoint paths, for removing files)."""
    ids = sorted(set(run_ids))
    if not ids:
        return []
    with session_scope(engine) as session:
        rows = list(session.scalars(select(RunRow).where(RunRow.id.in_(ids)).with_for_update()))
        missing = sorted(set(ids) - {row.id for row in rows})
        if missing:
            raise RunNotFound(missing[0])
        running = [row.id for row in rows if row.status == RunStatus.RUNNING]
        if running:
            which = ", ".join(map(str, running))
            raise ValueError(f"run {which} {'is' if len(running) == 1 else 'are'} running; "
                             "cancel before deleting (nothing was deleted)")
        gone = [run_from(row) for row in rows]
        for table in (EpochMetricRow, LayerStatRow, StepMetricRow):
            session.execute(delete(table).where(table.run_id.in_(ids)))
        session.execute(delete(RunRow).where(RunRow.id.in_(ids)))
        _count_deletion(session)
    return sorted(gone, key=lambda run: run.id)


def _count_deletion(session: Session) -> None:
    """One more in `run_deletions` (what the change token reads: storage.polling), in the
    deleting transaction; the row is made if it is missing."""
    counted = update(RunDeletionsRow).where(RunDeletionsRow.id == 1).values(
        deletions=RunDeletionsRow.deletions + 1)
    if cast("CursorResult[Any]", session.execute(counted)).rowcount == 0:
        session.add(RunDeletionsRow(id=1, deletions=1))


def delete_run(engine: Engine, run_id: int) -> None:
    """Delete a run and its epochs; a running run must be cancelled first (ValueError)."""
    with session_scope(engine) as session:
        row = session.get(RunRow, run_id)
        if row is None:
            raise RunNotFound(run_id)
        if row.status == RunStatus.RUNNING:
            raise ValueError(f"run {run_id} is running; cancel it before deleting it")
        session.execute(delete(EpochMetricRow).where(EpochMetricRow.run_id == run_id))
        session.execute(delete(LayerStatRow).where(LayerStatRow.run_id == run_id))
        session.execute(delete(StepMetricRow).where(StepMetricRow.run_id == run_id))
        session.delete(row)
        _count_deletion(session)


# --- labels: name, tags, comment (what a user may change after launch) ---------------------------
MAX_NAME = 200  # characters in a run's name (cnn_ablation.config.MAX_NAME says the same)
MAX_TAGS = 20
MAX_TAG = 32
MAX_COMMENT = 2000
_TAG = re.compile(r"[a-z0-9_.:-]{1,32}")  # MAX_TAG


def _refuse(field_name: str, given: Any, allowed: str) -> ValueError:
    shown = f"{given[:40]}... ({len(given)} characters)" \
        if isinstance(given, str) and len(given) > 60 else given
    return ValueError(f"{field_name}: {shown!r} is not allowed; allowed: {allowed}")


def check_label_name(name: object) -> str:
    """A run's name: text of at most MAX_NAME printable characters, or empty (the rule of
    cnn_ablation.config.check_name, here because storage imports nothing of cnn_ablation)."""
    if not isinstance(name, str) or len(name) > MAX_NAME or not name.isprintable():
        raise _refuse("name", name, f"text of at most {MAX_NAME} printable characters "
                                    "(no control characters)")
    return name


def check_tags(tags: object) -> tuple[str, ...]:
    """Tags as stored: each 1-32 letters, digits or `_.:-`, lower-cased, duplicates dropped,
    sorted; at most MAX_TAGS."""
    if isinstance(tags, str) or not isinstance(tags, Sequence):
        raise _refuse("tags", tags, "a list of tags")
    clean: set[str] = set()
    for tag in tags:
        if not isinstance(tag, str) or not _TAG.fullmatch(tag.strip().lower()):
            raise _refuse("tag", tag, f"1 to {MAX_TAG} characters of a-z, 0-9, _ . : - "
                                       "(upper case is stored lower-case)")
        clean.add(tag.strip().lower())
    if len(clean) > MAX_TAGS:
        raise _refuse("tags", f"{len(clean)} tags", f"at most {MAX_TAGS} tags per run")
    return tuple(sorted(clean))


def check_comment(comment: object) -> str:
    """A free-text note: plain text (line breaks and tabs allowed, no other control
    characters) of at most MAX_COMMENT characters."""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT or \
            not comment.replace("\n", "").replace("\t", "").replace("\r", "").isprintable():
        raise _refuse("comment", comment, f"plain text of at most {MAX_COMMENT} characters "
                                          "(no control characters but line breaks and tabs)")
    return comment


def update_labels(engine: Engine, run_id: int, *, name: str | None = None,
                  tags: Sequence[str] | None = None, comment: str | None = None) -> Run:
    """Rename a run, set its tags or its comment (only those given change; an empty comment
    clears it). Any status. ValueError naming the field for bad input; RunNotFound."""
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = check_label_name(name)
    if tags is not None:
        values["tags_json"] = json.dumps(list(check_tags(tags)))
    if comment is not None:
        values["comment"] = check_comment(comment) or None
    with session_scope(engine) as session:
        if values:
            session.execute(update(RunRow).where(RunRow.id == run_id).values(**values))
        row = session.get(RunRow, run_id)
        if row is None:
            raise RunNotFound(run_id)
        session.refresh(row)
        return run_from(row)
