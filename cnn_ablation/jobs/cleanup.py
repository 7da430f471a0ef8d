"""`cnn-ablation gc`: what the project leaves on disk and in the database that nothing needs any
more, found and removed, each item printed. Files of runs that no longer exist (logs, TensorBoard
folders), checkpoints of runs that will not resume, logs of workers long gone and their rows,
network files no run and no listed network names, probe answers not asked for in 30 days."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from sqlalchemy import Engine

from cnn_ablation.settings import settings
from cnn_ablation.storage import runs, workers
from cnn_ablation.storage.status import ACTIVE

WORKER_ROWS_KEPT_S = 7 * 24 * 3600  # a stopped worker's row (and log) is kept a week
CACHE_KEPT_S = 30 * 24 * 3600
_RUN_FILE = re.compile(r"^run-(\d+)(?:-[0-9a-f]+)?(?:\.log|\.keras)?$")


def _run_id(path: Path) -> int | None:
    match = _RUN_FILE.match(path.name)
    return int(match.group(1)) if match else None


def collect(engine: Engine, dry_run: bool = False) -> list[str]:
    """Remove (or with `dry_run` only list) what nothing needs; returns one line per item."""
    home = settings().home
    known = {r.id: r for r in runs.list_runs(engine)}
    active = {i for i, r in known.items() if r.status in ACTIVE}
    found: list[tuple[Path, str]] = []
    for folder, why in ((settings().logs, "log of a deleted run"),
                        (settings().tensorboard, "TensorBoard files of a deleted run")):
        for path in sorted(folder.glob("run-*")) if folder.is_dir() else []:
            run_id = _run_id(path)
            if run_id is not None and run_id not in known:
                found.append((path, why))
    checkpoints = settings().checkpoints
    for path in sorted(checkpoints.glob("run-*.keras")) if checkpoints.is_dir() else []:
        run_id = _run_id(path)
        if run_id is not None and run_id not in active:
            found.append((path, "checkpoint of a run that will not resume"))
    pruned = workers.prune_workers(engine, WORKER_ROWS_KEPT_S, dry_run=dry_run)
    alive = set(workers.worker_ids(engine)) - set(pruned)
    cutoff = time.time() - WORKER_ROWS_KEPT_S
    logs = settings().logs
    for path in sorted(logs.glob("worker-*.log*")) if logs.is_dir() else []:
        worker_id, dot, rest = path.name[len("worker-"):].rpartition(".log")
        if not dot or rest not in ("", ".1"):
            continue
        if worker_id not in alive and path.stat().st_mtime < cutoff:
            found.append((path, "log of a worker gone for over a week"))
    found += _network_files(home / "networks", known)
    lines = []
    for path, why in found:
        lines.append(f"{'would remove' if dry_run else 'removed'} {path} ({why})")
        if not dry_run:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    lines += [f"{'would remove' if dry_run else 'removed'} the row of worker {w} (stopped over a "
              "week ago)" for w in pruned]
    return lines


def _network_files(folder: Path, known: dict) -> list[tuple[Path, str]]:
    """Stored copies of network files that no run names and no `networks/*.keras` file is, and
    probe answers not read in 30 days."""
    from cnn_ablation.networks.registry import list_networks

    found: list[tuple[Path, str]] = []
    store = folder / ".store"
    if store.is_dir():
        named = {n.digest for n in list_networks() if n.kind == "file"}
        for run in known.values():
            key = (run.config or {}).get("network") or ""
            if key.startswith("file:") and "@" in key:
                named.add(key.rsplit("@", 1)[1])
        for path in sorted(store.glob("*.keras")):
            if path.stem not in named:
                found.append((path, "network file no run and no listed network uses"))
    cache = folder / ".cache"
    cutoff = time.time() - CACHE_KEPT_S
    for path in sorted(cache.glob("*.json")) if cache.is_dir() else []:
        if path.stat().st_atime < cutoff and path.stat().st_mtime < cutoff:
            found.append((path, "probe answer not asked for in 30 days"))
    return found
