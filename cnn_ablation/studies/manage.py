"""Studies as one object: create, the grid of cells x seeds, fill missing, re-run failed, cancel,
delete, adaptive seeds (`advance`), the time estimate and results. The Studies page and
`python -m cnn_ablation study` both call these.

A study's runs are found by config hash, not only by study id: a completed run with the same
config and seed from anywhere (another study, a single run) counts for its cell. Cancel and
delete touch only the runs the study itself queued."""

from __future__ import annotations

import functools
import json
import logging
import math
import socket
import statistics
from dataclasses import dataclass, replace

import pandas as pd
from sqlalchemy import Engine

from cnn_ablation.config import MAX_NAME, METRICS, ConfigError, RunConfig, check_name
from cnn_ablation.data.datasets import dataset_info
from cnn_ablation.jobs.launch import delete_runs, new_run
from cnn_ablation.settings import settings
from cnn_ablation.studies import estimators, inference, words
from cnn_ablation.studies.effects import interaction, main_effects, versus_base
from cnn_ablation.studies.spec import Cell, StudySpec
from storage import lifecycle, read_models, workers
from storage import studies as stored_studies
from storage.records import NewRun, RunNotFound
from storage.runs import create_runs, list_runs
from storage.status import ACTIVE, RunStatus

# Which run speaks for a (cell, seed) when it has several: a completed one first.
RANK = {RunStatus.COMPLETED: 0, RunStatus.RUNNING: 1, RunStatus.QUEUED: 2, RunStatus.DIVERGED: 3,
        RunStatus.FAILED: 4, RunStatus.CANCELLED: 5}
RECENT_RUNS = 10  # finished runs the time estimate is built from, the most recent first
DEFAULT_POWER_PP = 1.0  # the effect size (percentage points) the "seeds needed" column is for
log = logging.getLogger(__name__)
REPEATS_NOTE = ("Repeats of one (cell, seed), the same config and seed run more than once, are "
                "averaged first: the seed, not the run, is the unit of replication.")


@dataclass(frozen=True)
class StudyView:
    id: int
    name: str
    spec: StudySpec
    spec_json: str = ""  # as stored: what an adaptive round's update is conditional on


def create(engine: Engine, spec: StudySpec, name: str) -> tuple[int, list[int]]:
    """Store the study and queue every cell x seed that has no completed or active run."""
    check_name(name)
    check_network(spec)
    # Keyed by (cell, seed), not by config hash: `new_run` fills in what a run must state (a
    # folder dataset's image size), so its hash is not the planned config's.
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
    spec.check_layers([b["name"] for b in answer["batchnorm"]],
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
    frame = read_models.runs_frame(engine, config_hashes=list(by_hash))
    columns = ["run_id", "cell", "seed", "status", "study_id", *METRICS, *view.spec.factors]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for record in frame.to_dict("records"):
        cell, _ = by_hash[record["config_hash"]]
        rows.append({"run_id": record["id"], "cell": cell.label, "seed": record["seed"],
                     "status": record["status"], "study_id": record["study_id"],
                     **{m: record.get(m) for m in METRICS}, **cell.levels})
    return pd.DataFrame(rows, columns=columns)


def grid(engine: Engine, view: StudyView, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell, one column per seed with the best status among its runs (or
    `missing`), and how many seeds are done. `runs`: `attempts(...)` if already at hand."""
    return _grid(view, attempts(engine, view) if runs is None else runs)


def _grid(view: StudyView, runs: pd.DataFrame) -> pd.DataFrame:
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
        row["done"] = sum(v == RunStatus.COMPLETED for k, v in row.items() if k.startswith("seed "))
        rows.append(row)
    return pd.DataFrame(rows)


def progress(view: StudyView, grid_frame: pd.DataFrame) -> tuple[int, int]:
    """(cell x seed pairs with a completed run, all pairs the study asks for now)."""
    return int(grid_frame["done"].sum()), len(grid_frame) * view.spec.seeds


def _plan(engine: Engine, view: StudyView, want_failed: bool,
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
    todo = _plan(engine, view, want_failed=False)
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
           for cell, config in _plan(engine, view, want_failed=True)]
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
    _stop_rule(engine, view, "cancelled by user")
    return Cancelled(cancelled, stopping)


def _stop_rule(engine: Engine, view: StudyView, why: str) -> None:
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
    g = _grid(view, runs)
    done, total = progress(view, g)
    if done == total:
        return "complete"
    statuses = g[[c for c in g.columns if c.startswith("seed ")]].to_numpy().ravel()
    if any(s in (RunStatus.QUEUED, RunStatus.RUNNING) for s in statuses):
        return "running"
    return "waiting"


def advance(engine: Engine) -> list[int]:
    """For every adaptive study whose current round is complete: judge the rule on it and
    either queue the next round (more seeds per cell) or record why it stopped (precision
    reached, or the seed limit). Returns the ids of the runs queued. Safe to call from
    several processes at once: a round is queued exactly once (`replace_spec`)."""
    queued: list[int] = []
    for study in stored_studies.list_studies(engine):
        if not (study.spec.get("adaptive") or {}).get("half_width") or \
                study.spec["adaptive"].get("stopped"):
            continue
        try:
            view = StudyView(study.id, study.name, StudySpec.from_dict(study.spec),
                             study.spec_json)
        except (ConfigError, KeyError, TypeError, ValueError) as exc:  # never stop the caller
            log.warning("study %s: its spec cannot be read (%s); not advanced", study.id, exc)
            continue
        try:
            queued += _advance_one(engine, view)
        except ConfigError as exc:  # the next round cannot be queued (its dataset is gone, ...)
            log.warning("study %s: next round refused: %s", study.id, exc)
            _stop_rule(engine, view, f"the next round could not be queued: {exc}")
    return queued


def _advance_one(engine: Engine, view: StudyView) -> list[int]:
    rule = view.spec.adaptive
    assert rule is not None
    runs = attempts(engine, view)
    if round_state(view, runs) != "complete":
        return []
    result = results(engine, view, rule.metric, runs)
    widths = inference.half_widths(result["effects"])
    widest = float(widths.max()) if len(widths) and widths.notna().all() else math.nan
    seeds = view.spec.seeds
    history = (*rule.history, (seeds, widest))
    r = len(history)
    shown = f"{100 * widest:.2f} pp" if not math.isnan(widest) else "unknown (too few seeds)"
    stopped = ""
    if not math.isnan(widest) and widest < rule.half_width:
        stopped = (f"precision reached after round {r}: every 95 % interval is narrower than "
                   f"±{100 * rule.half_width:g} pp (widest ±{shown}) with {seeds} seeds per cell")
    elif seeds >= rule.max_seeds:
        stopped = (f"seed limit reached after round {r}: {seeds} seeds per cell; widest 95 % "
                   f"interval ±{shown}, target ±{100 * rule.half_width:g} pp")
    new_rule = replace(rule, history=history, stopped=stopped)
    spec = replace(view.spec, adaptive=new_rule)
    prepared: list[NewRun] = []
    if not stopped:
        spec = spec.with_seeds(min(seeds + rule.step, rule.max_seeds))
        wider = StudyView(view.id, view.name, spec)
        prepared = [new_run(config, name=run_name(view.name, cell.label), study_id=view.id)
                    for cell, config in _plan(engine, wider, want_failed=False, runs=runs)]
    ids = stored_studies.replace_spec(engine, view.id, view.spec_json, spec.to_json(), prepared)
    return ids or []


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


# --- time estimate ------------------------------------------------------------------------------
def _fit_images(config: RunConfig) -> int:
    """Training images one epoch fits: after the limit and the validation split."""
    n = dataset_info(config.dataset, config.image_size).train_size
    n = min(config.limit_train or n, n)
    return max(n - int(round(n * config.val_split)), 1)


def _size_key(config: RunConfig) -> tuple:
    return (config.limit_train, config.val_split, config.batch_size, config.image_size)


def _where_runs_train(engine: Engine) -> tuple[list[str], list[str] | None, int]:
    """(hosts, devices, slots) of the live workers; none alive: this host, any device, 1."""
    live = workers.live_workers(engine, max_age=3 * settings().heartbeat_s)
    devices = [d for slots in live["slots"] for d in str(slots).split(",")
               if d.startswith(("cpu", "gpu:"))]
    if not devices:
        return [socket.gethostname()], None, 1
    return sorted(set(live["host"])), sorted(set(devices)), len(devices)


def estimate_seconds(engine: Engine, spec: StudySpec, configs: list[RunConfig] | None = None,
                     slots: int | None = None) -> tuple[float | None, str]:
    """(seconds, basis) for the study's runs still to do (or `configs`), from the 10 most recent
    finished runs of the same preset and dataset on the live workers' hosts and devices
    (this host when no worker is alive): medians of their measured start-up, first epoch, later
    epochs and test pass, and of the hand-over between runs; epochs scaled by training images
    only where no run of the same size and batch has finished. Divided by the slots that train
    at once. (None, why) where nothing comparable has run."""
    base = spec.base
    if configs is None:
        configs = [c for _, c in spec.runs()]
        done, pending = read_models.same_config_runs(engine, [c.config_hash for c in configs])
        taken = {r.config_hash for r in done + pending}
        configs = [c for c in configs if c.config_hash not in taken]
    if not configs:
        return 0.0, "nothing left to run"
    hosts, devices, live_slots = _where_runs_train(engine)
    slots = slots or live_slots
    # your own networks share one preset ("custom"): read more, keep this network's runs below
    timings = stored_studies.run_timings(engine, base.preset, base.dataset, hosts, devices,
                                         recent=2 * RECENT_RUNS if base.network is None else 500)
    if base.network is not None and len(timings):
        timings = timings[[RunConfig.from_json(c).network == base.network
                           for c in timings["config_json"]]]
    # the most recent runs: what this machine does now (its load changes; old runs mislead)
    timings = timings.sort_values("finished_at").tail(RECENT_RUNS)
    if timings.empty:
        where = f"on {', '.join(devices)}" if devices else "on this machine"
        return None, (f"no estimate yet: no finished {base.preset} run on {base.dataset} {where}; "
                      "the first one gives the estimate")
    observed = [RunConfig.from_json(c) for c in timings["config_json"]]
    timings = timings.assign(size=[_size_key(c) for c in observed],
                             batch=[c.batch_size for c in observed],
                             fit_images=[_fit_images(c) for c in observed])
    total, scaled = 0.0, 0
    for config in configs:
        same = timings[timings["size"] == _size_key(config)]
        if same.empty:
            scaled += 1
            same_batch = timings[timings["batch"] == config.batch_size]
            pool = same_batch if len(same_batch) else timings
            ratio = _fit_images(config) / pool["fit_images"]
        else:
            pool, ratio = same, pd.Series(1.0, index=same.index)
        first = float((pool["first_epoch_s"] * ratio).median())
        later_values = (pool["later_epoch_s"] * ratio).dropna()
        later = float(later_values.median()) if len(later_values) else first
        total += (float(pool["startup_s"].median()) + first + (config.epochs - 1) * later
                  + float(pool["test_s"].median()))
    gaps = stored_studies.handover_seconds(engine, sorted(set(timings["worker_id"].dropna())))
    handover = statistics.median(gaps) if gaps else 0.0
    total = (total + handover * len(configs)) / max(slots, 1)
    basis = (f"{len(configs)} runs from {len(timings)} finished run(s) of {base.preset} on "
             f"{base.dataset}{' on ' + ', '.join(devices) if devices else ''}: start-up "
             f"{timings['startup_s'].median():.1f} s, test {timings['test_s'].median():.1f} s, "
             f"epochs measured")
    if scaled:
        basis += f" (scaled by training images for {scaled} run(s) of another size)"
    return total, basis + f"; {slots} slot(s)"


def remaining(engine: Engine, view: StudyView) -> dict:
    """The study's queued and running runs and the time they still need (estimate_seconds)."""
    pending = list_runs(engine, study_id=view.id, statuses=[s.value for s in ACTIVE])
    if not pending:
        return {"runs": 0, "seconds": 0.0, "basis": "nothing left to run"}
    seconds, basis = estimate_seconds(engine, view.spec,
                                      configs=[RunConfig.from_json(r.config_json) for r in pending])
    return {"runs": len(pending), "seconds": seconds, "basis": basis}


def remaining_text(left: dict) -> str:
    return (f"Remaining: {left['runs']} queued or running run(s), "
            f"{minutes_text(left['seconds'])} ({left['basis']}).")


def minutes_text(seconds: float | None) -> str:
    if seconds is None:
        return "no estimate yet"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    return f"about {seconds / 60:.0f} min" if seconds < 5400 else f"about {seconds / 3600:.1f} h"


# --- results ------------------------------------------------------------------------------------
def results(engine: Engine, view: StudyView, metric: str = "final_val_accuracy",
            runs: pd.DataFrame | None = None, power_pp: float = DEFAULT_POWER_PP) -> dict:
    """Everything the page, `study show` and the report state. `runs`: `attempts(...)` if
    already at hand. Keys: runs, completed, grid, done/total/complete, summary (per cell, with
    the difference to the base cell), effects (main effects of a full factorial design, else
    each cell vs the base), effects_kind, interactions (full factorial 2x2 pairs only), tables
    (their level means), seeds_needed, words, metric, power_pp."""
    spec = view.spec
    runs = attempts(engine, view) if runs is None else runs
    done_runs = runs[runs["status"] == RunStatus.COMPLETED]
    g = _grid(view, runs)
    done, total = progress(view, g)
    complete = done == total
    cells = spec.cells()
    labels = [c.label for c in cells]
    base = spec.base_cell().label
    target = power_pp / 100
    versus = inference.with_verdicts(inference.with_power(
        versus_base(done_runs, labels, base, metric), target), complete)
    summary = estimators.cell_summary(done_runs, labels)
    summary["is_base"] = summary["cell"] == base
    delta = versus.set_index("cell")
    for column, source in (("delta", "effect"), ("delta_ci_low", "ci_low"),
                           ("delta_ci_high", "ci_high"), ("delta_n", "n"),
                           ("delta_paired", "paired"), ("delta_p", "p"),
                           ("delta_p_holm", "p_holm"), ("delta_verdict", "verdict"),
                           ("delta_verdict_holm", "verdict_holm")):
        summary[column] = [delta[source].get(c) if c in delta.index else None
                           for c in summary["cell"]]
    interactions = pd.DataFrame(columns=["factor_1", "factor_2", *estimators.EFFECT_COLUMNS])
    tables = {}
    if spec.design == "full" and spec.factors:
        factorial = done_runs[done_runs["cell"].isin([c.label for c in cells if not c.extra])]
        effects = main_effects(factorial, spec.factors, spec.reference_levels(), metric)
        kind = "main effects"
        rows = []
        for f1, f2 in spec.interaction_pairs():
            table, est = interaction(factorial, f1, f2, spec.factors,
                                              spec.reference_levels(), metric)
            tables[(f1, f2)] = table
            if est is not None:
                rows.append({"factor_1": f1, "factor_2": f2, **est.row()})
        if rows:
            interactions = inference.with_verdicts(pd.DataFrame(rows), complete)
    else:
        effects, kind = versus[["cell", *estimators.EFFECT_COLUMNS]], "each cell vs the base"
    effects = inference.with_verdicts(inference.with_power(effects, target), complete)
    needed = effects["seeds_needed"].dropna() if len(effects) else pd.Series(dtype=float)
    return {"runs": runs, "completed": done_runs, "grid": g, "done": done, "total": total,
            "complete": complete, "summary": summary, "effects": effects, "effects_kind": kind,
            "base_cell": base, "interactions": interactions, "tables": tables,
            "seeds_needed": float(needed.max()) if len(needed) else math.nan,
            "words": words.plain_words(effects, METRICS[metric], done, total),
            "metric": metric, "power_pp": power_pp}


def status_line(result: dict) -> str:
    """`complete: 8 of 8 runs` or `provisional: 3 of 8 runs`."""
    state = "complete" if result["complete"] else "provisional"
    return f"{state}: {result['done']} of {result['total']} runs"


def power_text(result: dict) -> str:
    needed = result["seeds_needed"]
    if math.isnan(needed):
        return (f"Seeds per cell to detect {result['power_pp']:g} pp with 80 % power: not known "
                "yet (needs at least 2 seeds per cell).")
    return (f"To detect a change of {result['power_pp']:g} pp with 80 % power (two-sided, 5 %), "
            f"every effect needs at most {needed:.0f} seeds per cell, judging by the seed-to-seed "
            "spread seen so far (statsmodels' TTestPower; per effect in the table).")


def _records(frame: pd.DataFrame) -> list[dict]:
    import json

    return json.loads(frame.to_json(orient="records", default_handler=str, double_precision=15))


def result_json(view: StudyView, result: dict) -> dict:
    """Every number the Studies page shows, as JSON (`study show --json`)."""
    tables = {f"{f1} x {f2}": {str(k): v for k, v in table.to_dict().items()}
              for (f1, f2), table in result["tables"].items()}
    rule = view.spec.adaptive
    return {
        "id": view.id, "name": view.name, "spec": view.spec.to_dict(), "metric": result["metric"],
        "status": {"state": "complete" if result["complete"] else "provisional",
                   "completed_runs": result["done"], "total_runs": result["total"],
                   "text": status_line(result)},
        "adaptive": None if rule is None else {
            "rule": rule.text(), "round": rule.round, "seeds_per_cell": view.spec.seeds,
            "stopped": rule.stopped or None,
            "history": [{"round": i + 1, "seeds": s, "widest_half_width": w}
                        for i, (s, w) in enumerate(rule.history)],
            "text": adaptive_text(view, result["runs"])},
        "repeats": REPEATS_NOTE,
        "grid": result["grid"].to_dict("records"),
        "base_cell": result["base_cell"],
        "summary": _records(result["summary"]),
        "effects_kind": result["effects_kind"],
        "effects": _records(result["effects"]),
        "interactions": _records(result["interactions"]),
        "interaction_tables": tables,
        "power": {"target_pp": result["power_pp"], "power": estimators.POWER,
                  "alpha": estimators.ALPHA,
                  "seeds_needed": None if math.isnan(result["seeds_needed"])
                  else result["seeds_needed"]},
        "words": result["words"],
    }


def interaction_text(row: dict) -> str:
    return (f"{row['factor_1']} × {row['factor_2']}: the effect of {row['factor_2']} changes by "
            f"{words.pp_interval(row['effect'], row['ci_low'], row['ci_high'])} when "
            f"{row['factor_1']} changes; {row['verdict']}")

