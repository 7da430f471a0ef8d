"""Adaptive seeds: a study that adds seeds a round at a time until its intervals are narrow
enough (or its seed limit is reached); `advance` is the worker's run-ended hook."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

from sqlalchemy import Engine

from cnn_ablation.config import ConfigError
from cnn_ablation.jobs.launch import new_run
from cnn_ablation.studies import inference
from cnn_ablation.studies.grid import attempts, plan, round_state, run_name, stop_rule
from cnn_ablation.studies.results import results
from cnn_ablation.studies.spec import StudySpec, StudyView
from storage import studies as stored_studies
from storage.records import NewRun

log = logging.getLogger(__name__)


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
            stop_rule(engine, view, f"the next round could not be queued: {exc}")
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
                    for cell, config in plan(engine, wider, want_failed=False, runs=runs)]
    ids = stored_studies.replace_spec(engine, view.id, view.spec_json, spec.to_json(), prepared)
    return ids or []


