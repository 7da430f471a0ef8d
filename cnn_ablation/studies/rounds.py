"""Adaptive seeds: a study that adds seeds a round at a time up to the plan its first round's
spread made (or its seed limit); `decide` judges a finished round, `advance` (the worker's
run-ended hook) stores that and queues the next round."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import pandas as pd
from sqlalchemy import Engine

from cnn_ablation.config import METRICS, ConfigError
from cnn_ablation.jobs.launch import new_run
from cnn_ablation.storage import studies as stored_studies
from cnn_ablation.storage.records import NewRun
from cnn_ablation.studies.adaptive_rule import AdaptiveRule
from cnn_ablation.studies.grid import attempts, plan, round_state, run_name, stop_rule
from cnn_ablation.studies.results import results
from cnn_ablation.studies.spec import StudySpec, StudyView

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
    new_rule, seeds = decide(rule, view.spec.seeds, results(engine, view, rule.metric, runs))
    spec = replace(view.spec, adaptive=new_rule)
    prepared: list[NewRun] = []
    if not new_rule.stopped:
        spec = spec.with_seeds(seeds)
        wider = StudyView(view.id, view.name, spec)
        prepared = [new_run(config, name=run_name(view.name, cell.label), study_id=view.id)
                    for cell, config in plan(engine, wider, want_failed=False, runs=runs)]
    ids = stored_studies.replace_spec(engine, view.id, view.spec_json, spec.to_json(), prepared)
    return ids or []


def intervals(result: dict) -> pd.DataFrame:
    """Every difference's interval the study states (effects, interactions, each cell vs the
    base): effect, ci_low, ci_high, sd. What the rule plans from and judges."""
    summary = result["summary"]
    named = {"delta": "effect", "delta_ci_low": "ci_low", "delta_ci_high": "ci_high",
             "delta_sd": "sd", "delta_n": "n"}
    versus = summary[~summary["is_base"]][list(named)].rename(columns=named)
    columns = ["effect", "ci_low", "ci_high", "sd", "n"]
    parts = [f[columns] for f in (result["effects"], result["interactions"], versus) if len(f)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return frame.astype(float)


def decide(rule: AdaptiveRule, seeds: int, result: dict) -> tuple[AdaptiveRule, int]:
    """The rule after a complete round of `seeds` per cell with these results: its new state
    (history, the plan after round 1, why it stopped) and the seeds per cell of the next round
    (`seeds` when it stopped). Stein's rule: the plan comes from round 1's spreads alone and is
    never revised (see AdaptiveRule). No database: the coverage simulation calls this."""
    found = intervals(result)
    widths = (found["ci_high"] - found["ci_low"]) / 2
    widest = float(widths.max()) if len(widths) and widths.notna().all() else math.nan
    history = (*rule.history, (seeds, widest))
    r = len(history)
    planned, first = rule.planned, rule.first
    if not planned:  # the first decision (or a study from before this rule): plan now
        rows = [(float(sd), int(n) if n == n else 0)
                for sd, n in zip(found["sd"], found["n"], strict=True)]
        planned, first = rule.plan(seeds, rows), seeds
    shown = f"±{100 * widest:.2f} pp" if not math.isnan(widest) else "unknown"
    target = f"±{100 * rule.half_width:g} pp"
    stopped = ""
    if found.empty or found["effect"].isna().all():
        stopped = (f"no values of {METRICS[rule.metric]} in round {r}: nothing to plan from "
                   "(does the metric exist for these runs?)")
    elif seeds >= planned and not math.isnan(widest) and widest < rule.half_width:
        stopped = (f"precision reached after round {r}: every 95 % interval is narrower than "
                   f"{target} (widest {shown}) with {seeds} seeds per cell")
    elif seeds >= planned and planned < rule.max_seeds:
        planned_in = next(i for i, (n, _) in enumerate(history, 1) if n == first)
        stopped = (f"plan met after round {r}: the {planned} seeds per cell planned from round "
                   f"{planned_in}'s spread are done; widest 95 % interval {shown}, target "
                   f"{target} (an interval whose seeds do not all pair is wider than planned)")
    elif seeds >= planned:
        stopped = (f"seed limit reached after round {r}: {seeds} seeds per cell; widest 95 % "
                   f"interval {shown}, target {target}")
    new_rule = replace(rule, history=history, stopped=stopped, planned=planned, first=first)
    return new_rule, seeds if stopped else min(seeds + rule.step, planned)
