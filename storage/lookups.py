"""Small lookups over runs that pages and commands ask for: the datasets and tags in use (the
Runs page's filters), run labels, variants and the newest runs (Compare's pickers), runs of the
same config (what New run and a study's estimate point out) and finished runs' durations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, literal_column, select

from cnn_ablation.storage.engine import session_scope
from cnn_ablation.storage.models import RunRow
from cnn_ablation.storage.records import Run
from cnn_ablation.storage.runs import list_runs
from cnn_ablation.storage.status import ACTIVE, RunStatus


def datasets_in_use(engine: Engine) -> list[str]:
    """Every dataset some run names, sorted (the Runs page's filter)."""
    with session_scope(engine, write=False) as session:
        return list(session.scalars(select(RunRow.dataset).distinct().order_by(RunRow.dataset)))


def tags_in_use(engine: Engine) -> list[str]:
    """Every tag some run carries, sorted (the Runs page's tag filter)."""
    import json

    # The condition of the partial index ix_runs_tagged, word for word (a literal, not a bound
    # value): only runs with tags are read, through that index.
    with session_scope(engine, write=False) as session:
        stored = session.scalars(select(RunRow.tags_json).distinct().where(
            RunRow.tags_json != literal_column("'[]'")))
        return sorted({str(tag) for text in stored for tag in json.loads(text or "[]")})


def run_labels(engine: Engine, newest: int | None = None,
               ids: Sequence[int] | None = None) -> list[tuple[int, str, str]]:
    """(id, name, config label) of every run, or of the `newest` N, or of these `ids` (those
    that exist), in id order: a picker's options."""
    query = select(RunRow.id, RunRow.name, RunRow.label)
    if ids is not None:
        query = query.where(RunRow.id.in_(list(ids)))
    if newest is not None:
        query = query.order_by(RunRow.id.desc()).limit(newest)
    with session_scope(engine, write=False) as session:
        rows = [(int(i), name or "", label) for i, name, label in session.execute(query)]
    return sorted(rows)


def variants(engine: Engine) -> list[dict[str, Any]]:
    """One row per variant (config without the seed): variant_hash, label, dataset, runs, and
    its first and last run ids (two variants may share a label: the ids tell them apart)."""
    query = select(RunRow.variant_hash, func.min(RunRow.label).label("label"),
                   func.min(RunRow.dataset).label("dataset"),
                   func.count().label("runs"), func.min(RunRow.id).label("first"),
                   func.max(RunRow.id).label("last")).group_by(RunRow.variant_hash) \
        .order_by(func.min(RunRow.id))
    with session_scope(engine, write=False) as session:
        return [dict(r) for r in session.execute(query).mappings()]


def variant_run_ids(engine: Engine, variant_hash: str) -> list[int]:
    with session_scope(engine, write=False) as session:
        return list(session.scalars(select(RunRow.id).where(RunRow.variant_hash == variant_hash)
                                    .order_by(RunRow.id)))


def latest_ids(engine: Engine, status: str | None = None, n: int = 2) -> list[int]:
    """The `n` newest run ids (of `status`), oldest of them first."""
    query = select(RunRow.id).order_by(RunRow.id.desc()).limit(n)
    if status is not None:
        query = query.where(RunRow.status == status)
    with session_scope(engine, write=False) as session:
        return sorted(session.scalars(query))


def same_config_runs(engine: Engine, config_hashes: list[str]) -> tuple[list[Run], list[Run]]:
    """(completed, queued or running) runs with exactly one of these configs (seed included):
    what New run points out before a variant is launched again."""
    runs = list_runs(engine, config_hashes=config_hashes)
    done = [r for r in runs if r.status == RunStatus.COMPLETED]
    pending = [r for r in runs if r.status in ACTIVE]
    return done, pending


def finished_run_times(engine: Engine, preset: str, dataset: str,
                       host: str | None = None) -> list[tuple[float, str]]:
    """(seconds, config JSON) of completed runs of one preset and dataset (on `host` if given)."""
    query = select(RunRow.started_at, RunRow.finished_at, RunRow.config_json).where(
        RunRow.status == RunStatus.COMPLETED, RunRow.preset == preset, RunRow.dataset == dataset)
    if host:
        query = query.where(RunRow.host == host)
    with session_scope(engine, write=False) as session:
        return [(end - start, config) for start, end, config in session.execute(query)
                if start and end]
