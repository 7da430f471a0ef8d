"""A study's grid of cells x seeds as runs: create, fill missing, re-run failed, cancel, delete,
and which run speaks for each (cell, seed). Adaptive rounds are `rounds`, the time estimate
`estimate`, the numbers `results`. The Studies page and `python -m cnn_ablation study` both call
these.

A study's runs are found by config hash, not only by study id: a completed run with the same
config and seed from anywhere (another study, a single run) counts for its cell. Cancel and
delete touch only the runs the study itself queued."""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass, replace

import pandas as pd
from sqlalchemy import Engine

from cnn_ablation.config import MAX_NAME, METRICS, ConfigError, RunConfig, check_name
from cnn_ablation.jobs.launch import delete_runs, new_run
from cnn_ablation.storage import lifecycle, listings
from cnn_ablation.storage import studies as stored_studies
from cnn_ablation.storage.records import NewRun, RunNotFound
from cnn_ablation.storage.runs import create_runs, list_runs
from cnn_ablation.storage.status import ACTIVE, RunStatus
from cnn_ablation.studies.own_network import check_layers
from cnn_ablation.studies.spec import Cell, StudySpec, StudyView

# Which run speaks for a (cell, seed) when it has several: a completed one first.
RANK = {RunStatus.COMPLETED: 0, RunStatus.RUNNING: 1, RunStatus.QUEUED: 2, RunStatus.DIVERGED: 3,
        RunStatus.FAILED: 4, RunStatus.CANCELLED: 5}
DONE = (RunStatus.COMPLETED, RunStatus.DIVERGED)
log = logging.getLogger(__name__)


def create(engine: Engine, spec: StudySpec, name: str) -> tuple[int, list[int]]:
    """Store the study and queue every cell x seed that has no completed or active run."""
    check_name(name)
    spec.check_new()
    check_network(spec)
    # The base as its runs will state it (`new_run` fills in a folder dataset's image size): the
    # study finds its runs by config hash, and a stored base without the size matched none.
    spec = replace(spec, base=RunConfig.from_json(new_run(spec.base).config_json))
    # Keyed by (cell, seed): what `fill_missing` plans is a (cell, seed) pair.
    new_runs = {(cell.label, config.seed): new_run(config, name=run_name(name, cell.label))
                for cell, config in spec.runs()}
    study_id = stored_studies.create_study(engine, name or "study", spec.to_json())
    return study_id, fill_missing(engine, study_id, prepared=new_runs)


def check_network(spec: StudySpec) -> None:
    """With your own network: its factors must name layers it has. The network's BatchNorm and
    Dropout layers come from the probe (a helper process, cached; the caller never imports
    TensorFlow); a factor naming another layer is refused (ConfigError, field `factor`) before
    any cell is checked or queued. The chapter's network: nothing to ask."""
    base = spec.base
    if base.network is None:
        return
    from cnn_ablation.data.arrays import DatasetUnavailable
    from cnn_ablation.data.datasets import check_fits
    from cnn_ablation.data.datasets import resolve as resolve_dataset
    from cnn_ablation.networks import registry as networks

    networks.resolve(base.network)
    try:
        info = check_fits(resolve_dataset(base))
    except DatasetUnavailable as exc:
        raise ConfigError("dataset", base.dataset, f"a dataset that exists here ({exc})") from exc
    answer = networks.probe(base.network, info.shape, info.num_classes)
    if not answer["ok"]:
        raise ConfigError(answer["field"], base.network, answer["error"].split("allowed: ", 1)[-1])
    check_layers(spec.factors, [b["name"] for b in answer["batchnorm"]],
                 [d["name"] for d in answer["dropout"]])


def run_name(study: str, cell: str) -> str:
    """A study run's name, `study: cell`, cut to the longest name a run may have."""
    name = f"{study}: {cell}"
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def load(engine: Engine, study_id: int) -> StudyView:
    """The study with its spec parsed (StudyNotFound if there is none)."""
    study = stored_studies.find_study_or_raise(engine, study_id)
    return StudyView(study.id, study.name, _parsed(study.spec_json), study.spec_json)


@functools.lru_cache(maxsize=64)
def _parsed(spec_json: str) -> StudySpec:
    """One StudySpec object per stored spec, so that its cells and configs (memoised on the
    object) are built once, not on every refresh of the Studies page."""
    return StudySpec.from_dict(json.loads(spec_json))


def attempts(engine: Engine, view: StudyView) -> pd.DataFrame:
    """Every run of the study's configs (any origin): run_id, cell, seed, status, metrics,
    and one column per factor with its level."""
    pairs = view.spec.runs()
    by_hash = {config.config_hash: (cell, config) for cell, config in pairs}
    frame = listings.runs_frame(engine, config_hashes=list(by_hash))
    columns = ["run_id", "cell", "seed", "status", "study_id", "backend", "device_kind", *METRICS,
               *view.spec.factors]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for record in frame.to_dict("records"):
        cell, _ = by_hash[record["config_hash"]]
        rows.append({"run_id": record["id"], "cell": cell.label, "seed": record["seed"],
                     "status": record["status"], "study_id": record["study_id"],
                     "backend": record.get("backend") or "tensorflow",
                     "device_kind": device_kind(record.get("device")),
                     **{m: record.get(m) for m in METRICS}, **cell.levels})
    return pd.DataFrame(rows, columns=columns)


def device_kind(device: object) -> str | None:
    """"gpu" or "cpu" from a run's device ("gpu:0", "cpu", "ray:gpu"...); None before a claim."""
    if not isinstance(device, str) or not device:
        return None
    return "gpu" if "gpu" in device.lower() else "cpu"


def grid(engine: Engine, view: StudyView, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell, one column per seed with the best status among its runs (or
    `missing`), and how many seeds are done. `runs`: `attempts(...)` if already at hand."""
    return grid_of(view, attempts(engine, view) if runs is None else runs)


def grid_of(view: StudyView, runs: pd.DataFrame) -> pd.DataFrame:
    best: dict[tuple[str, int], str] = {}
    for cell, seed, status in zip(runs["cell"], runs["seed"], runs["status"], strict=True):
        key = (cell, int(seed))
        if key not in best or RANK[RunStatus(status)] < RANK[RunStatus(best[key])]:
            best[key] = status
    rows = []
    for cell in view.spec.cells():
        row: dict[str, object] = {"cell": cell.label}
        for seed in range(view.spec.seeds):
            row[f"seed {seed}"] = best.get((cell.label, seed), "missing")
        # a diverged seed is an outcome (counted, "diverged in k of n seeds"), not a missing run
        row["done"] = sum(v in DONE for k, v in row.items() if k.startswith("seed "))
        rows.append(row)
    return pd.DataFrame(rows)


def progress(view: StudyView, grid_frame: pd.DataFrame) -> tuple[int, int]:
    """(cell x seed pairs with a completed or diverged run, all pairs the study asks for now)."""
    return int(grid_frame["done"].sum()), len(grid_frame) * view.spec.seeds


def plan(engine: Engine, view: StudyView, want_failed: bool,
          runs: pd.DataFrame | None = None) -> list[tuple[Cell, RunConfig]]:
    runs = attempts(engine, view) if runs is None else runs
    todo = []
    for cell, config in view.spec.runs():
        mine = runs[(runs["cell"] == cell.label) & (runs["seed"] == config.seed)]["status"]
        if (mine.isin([RunStatus.COMPLETED, RunStatus.QUEUED, RunStatus.RUNNING])).any():
            continue  # done (perhaps by another study or a single run), or on its way
        tried = bool(len(mine))
        if tried == want_failed:
            todo.append((cell, config))
    return todo


def fill_missing(engine: Engine, study_id: int,
                 prepared: dict[tuple[str, int], NewRun] | None = None) -> list[int]:
    """Queue the cells x seeds that were never run (completed runs elsewhere count);
    `prepared`: their runs already checked, by (cell label, seed)."""
    view = load(engine, study_id)
    todo = plan(engine, view, want_failed=False)
    if prepared is not None:
        new = [prepared[(cell.label, config.seed)] for cell, config in todo]
    else:
        new = [new_run(config, name=run_name(view.name, cell.label)) for cell, config in todo]
    new = [replace(r, study_id=study_id) for r in new]
    return create_runs(engine, new)


def rerun_failed(engine: Engine, study_id: int) -> list[int]:
    """Queue again the cells x seeds whose every run failed, diverged or was cancelled."""
    view = load(engine, study_id)
    new = [new_run(config, name=run_name(view.name, cell.label), study_id=study_id)
           for cell, config in plan(engine, view, want_failed=True)]
    return create_runs(engine, new)


# --- cancel and delete --------------------------------------------------------------------------
@dataclass(frozen=True)
class Cancelled:
    cancelled: list[int]  # queued runs, cancelled at once
    stopping: list[int]  # running runs asked to stop


def cancel(engine: Engine, study_id: int, now: bool = False) -> Cancelled:
    """Cancel the study's own runs: queued ones at once, running ones asked to stop (after their
    current epoch, or at once with `now`); an adaptive study stops adding rounds."""
    view = load(engine, study_id)
    cancelled, stopping = [], []
    for run in list_runs(engine, study_id=study_id, statuses=[s.value for s in ACTIVE]):
        try:
            status = lifecycle.request_cancel(engine, run.id, now=now)
        except RunNotFound:
            continue  # deleted meanwhile
        if status == RunStatus.CANCELLED:
            cancelled.append(run.id)
        elif status == RunStatus.RUNNING:
            stopping.append(run.id)
    stop_rule(engine, view, "cancelled by user")
    return Cancelled(cancelled, stopping)


def stop_rule(engine: Engine, view: StudyView, why: str) -> None:
    """Record that an adaptive study stops adding rounds (unless it already stopped)."""
    for _ in range(5):  # someone may advance it meanwhile: read again and retry
        rule = view.spec.adaptive
        if rule is None or rule.stopped:
            return
        spec = replace(view.spec, adaptive=replace(rule, stopped=why))
        if stored_studies.replace_spec(engine, view.id, view.spec_json, spec.to_json()) is not None:
            return
        view = load(engine, view.id)


def delete(engine: Engine, study_id: int, with_runs: bool = False) -> list[int]:
    """Delete a study. Its runs are kept (no longer part of a study) unless `with_runs`, which
    deletes the runs it queued (with their epochs). Refused (ValueError) while any of its runs
    is queued or running: cancel the study first. Returns the ids of the runs deleted."""
    load(engine, study_id)  # StudyNotFound first
    own = list_runs(engine, study_id=study_id)
    active = [r.id for r in own if r.status in ACTIVE]
    if active:
        raise ValueError(f"study {study_id} still has {len(active)} queued or running run(s) "
                         f"({', '.join(map(str, active[:5]))}{'…' if len(active) > 5 else ''}); "
                         "cancel the study first")
    deleted = []
    if with_runs:
        # with their files (logs, checkpoints, TensorBoard folders), as deleting a run does
        deleted = [run.id for run in own]
        for _ in range(3):  # a run deleted elsewhere meanwhile: delete the ones left
            try:
                delete_runs(engine, deleted)
                break
            except RunNotFound:
                deleted = [run.id for run in list_runs(engine, study_id=study_id)]
    stored_studies.delete_study(engine, study_id)
    return deleted


# --- adaptive seeds -----------------------------------------------------------------------------
def round_state(view: StudyView, runs: pd.DataFrame) -> str:
    """`running` (runs of this round are queued or running), `complete` (every cell x seed has
    a completed run), or `waiting` (nothing active, but runs are missing, failed or cancelled:
    fill missing or re-run failed to go on)."""
    g = grid_of(view, runs)
    done, total = progress(view, g)
    if done == total:
        return "complete"
    statuses = g[[c for c in g.columns if c.startswith("seed ")]].to_numpy().ravel()
    if any(s in (RunStatus.QUEUED, RunStatus.RUNNING) for s in statuses):
        return "running"
    return "waiting"


def adaptive_text(view: StudyView, runs: pd.DataFrame | None = None) -> str:
    """The rule, the round and its state (or why it stopped), in sentences."""
    rule = view.spec.adaptive
    if rule is None:
        return ""
    out = f"Adaptive seeds: {rule.text()}. "
    if rule.stopped:
        return out + f"Stopped: {rule.stopped}."
    out += f"Round {rule.round} ({view.spec.seeds} seeds per cell)"
    state = round_state(view, runs) if runs is not None else ""
    out += {"running": ": running.", "complete": ": complete; the next round is being decided.",
            "waiting": ": waiting: runs of this round are missing, failed or cancelled (fill "
                       "missing or re-run failed to go on).", "": "."}[state]
    if rule.history:
        seeds, widest = rule.history[-1]
        if not math.isnan(widest):
            out += (f" After round {len(rule.history)} ({seeds} seeds per cell) the widest "
                    f"interval was ±{100 * widest:.2f} pp.")
    return out
