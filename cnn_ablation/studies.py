"""Studies as one object: create, the grid of cells x seeds, fill missing, re-run failed, time
estimate and results. The Studies page and `python -m cnn_ablation study` both call these.

A study's runs are found by config hash, not only by study id: a completed run with the same
config and seed from anywhere (another study, a single run) counts for its cell."""

from __future__ import annotations

import socket
import statistics
from dataclasses import dataclass, replace

import pandas as pd
from sqlalchemy import Engine

from cnn_ablation import analysis
from cnn_ablation.config import MAX_NAME, METRICS, RunConfig, check_name
from cnn_ablation.datasets import dataset_info
from cnn_ablation.launch import new_run
from cnn_ablation.study_spec import Cell, StudySpec
from storage import read_models
from storage import studies as stored_studies
from storage.records import NewRun
from storage.runs import create_runs
from storage.status import RunStatus

# Which run speaks for a (cell, seed) when it has several: a completed one first.
RANK = {RunStatus.COMPLETED: 0, RunStatus.RUNNING: 1, RunStatus.QUEUED: 2, RunStatus.DIVERGED: 3,
        RunStatus.FAILED: 4, RunStatus.CANCELLED: 5}


@dataclass(frozen=True)
class StudyView:
    id: int
    name: str
    spec: StudySpec


def create(engine: Engine, spec: StudySpec, name: str) -> tuple[int, list[int]]:
    """Store the study and queue every cell x seed that has no completed or active run."""
    check_name(name)
    new_runs = [new_run(config, name=run_name(name, cell.label)) for cell, config in spec.runs()]
    study_id = stored_studies.create_study(engine, name or "study", spec.to_json())
    return study_id, fill_missing(engine, study_id, prepared=new_runs)


def run_name(study: str, cell: str) -> str:
    """A study run's name, `study: cell`, cut to the longest name a run may have."""
    name = f"{study}: {cell}"
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def load(engine: Engine, study_id: int) -> StudyView:
    """The study with its spec parsed (StudyNotFound if there is none)."""
    study = stored_studies.find_study_or_raise(engine, study_id)
    return StudyView(study.id, study.name, StudySpec.from_dict(study.spec))


def attempts(engine: Engine, view: StudyView) -> pd.DataFrame:
    """Every run of the study's configs (any origin): run_id, cell, seed, status, metrics,
    and one column per factor with its level."""
    pairs = view.spec.runs()
    by_hash = {config.config_hash: (cell, config) for cell, config in pairs}
    frame = read_models.runs_frame(engine, config_hashes=list(by_hash))
    columns = ["run_id", "cell", "seed", "status", *METRICS, *view.spec.factors]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for record in frame.to_dict("records"):
        cell, _ = by_hash[record["config_hash"]]
        rows.append({"run_id": record["id"], "cell": cell.label, "seed": record["seed"],
                     "status": record["status"],
                     **{m: record.get(m) for m in METRICS}, **cell.levels})
    return pd.DataFrame(rows, columns=columns)


def grid(engine: Engine, view: StudyView, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell, one column per seed with the best status among its runs (or
    `missing`), and how many seeds are done. `runs`: `attempts(...)` if already at hand."""
    runs = attempts(engine, view) if runs is None else runs
    rows = []
    for cell in view.spec.cells():
        row: dict[str, object] = {"cell": cell.label}
        for seed in range(view.spec.seeds):
            statuses = runs[(runs["cell"] == cell.label) & (runs["seed"] == seed)]["status"]
            row[f"seed {seed}"] = (min(statuses, key=lambda s: RANK[RunStatus(s)])
                                   if len(statuses) else "missing")
        row["done"] = sum(v == RunStatus.COMPLETED for k, v in row.items() if k.startswith("seed "))
        rows.append(row)
    return pd.DataFrame(rows)


def _plan(engine: Engine, view: StudyView, want_failed: bool) -> list[tuple[Cell, RunConfig]]:
    runs = attempts(engine, view)
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
                 prepared: list[NewRun] | None = None) -> list[int]:
    """Queue the cells x seeds that were never run (completed runs elsewhere count)."""
    view = load(engine, study_id)
    todo = _plan(engine, view, want_failed=False)
    if prepared is not None:
        wanted = {c.config_hash for _, c in todo}
        new = [r for r in prepared if r.config_hash in wanted]
    else:
        new = [new_run(config, name=run_name(view.name, cell.label)) for cell, config in todo]
    new = [replace(r, study_id=study_id) for r in new]
    return create_runs(engine, new)


def rerun_failed(engine: Engine, study_id: int) -> list[int]:
    """Queue again the cells x seeds whose every run failed, diverged or was cancelled."""
    view = load(engine, study_id)
    new = [new_run(config, name=run_name(view.name, cell.label), study_id=study_id)
           for cell, config in _plan(engine, view, want_failed=True)]
    return create_runs(engine, new)


def _image_epochs(config: RunConfig) -> int:
    """Training images seen by a run: epochs x images after limit and validation split."""
    n = dataset_info(config.dataset, config.image_size).train_size
    n = min(config.limit_train or n, n)
    return config.epochs * (n - int(round(n * config.val_split)))


def estimate_seconds(engine: Engine, spec: StudySpec,
                     slots: int = 1) -> tuple[float | None, str]:
    """(seconds, basis text) from finished runs of the same preset and dataset on this machine
    (their seconds per training image, start-up included), or (None, why not)."""
    base = spec.base
    times = read_models.finished_run_times(engine, base.preset, base.dataset, socket.gethostname())
    if not times:
        return None, (f"no finished {base.preset} runs on {base.dataset} on this machine yet; "
                      "the first ones give the estimate")
    rate = statistics.median(seconds / max(_image_epochs(RunConfig.from_json(config)), 1)
                             for seconds, config in times)
    total = sum(_image_epochs(config) for _, config in spec.runs()) * rate / max(slots, 1)
    return total, (f"{1000 * rate:.2f} ms per training image, median of {len(times)} finished "
                   f"runs of {base.preset} on {base.dataset} here; {slots} slot(s)")


def results(engine: Engine, view: StudyView, metric: str = "final_val_accuracy",
            runs: pd.DataFrame | None = None) -> dict:
    """Per-cell summary, factor effects (or each cell vs the base cell) and plain words.
    `runs`: `attempts(...)` if already at hand."""
    runs = attempts(engine, view) if runs is None else runs
    done = runs[runs["status"] == RunStatus.COMPLETED]
    cells = [c.label for c in view.spec.cells()]
    summary = analysis.cell_summary(done, cells)
    base_levels = {f: view.spec.level_of(view.spec.base, f) for f in view.spec.factors}
    if view.spec.factors:
        effects = analysis.main_effects(done, view.spec.factors, base_levels, metric)
    else:
        base_cell = next((c.label for c in view.spec.cells()
                          if c.config.config_hash == view.spec.base.with_changes(seed=0)
                          .config_hash), cells[0])
        effects = analysis.versus_base(done, cells, base_cell, metric)
    return {"runs": runs, "completed": done, "summary": summary, "effects": effects,
            "words": analysis.plain_words(effects, METRICS[metric])}
