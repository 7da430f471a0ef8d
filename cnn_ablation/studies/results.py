"""A study's results: from its runs, one value per (cell, seed), each cell's summary, the effects
(main, against the base, interactions) with verdicts, Holm and power, and the precision rule's
state: everything the page, `study show` and the report state."""

from __future__ import annotations

import json
import logging
import math

import pandas as pd
from sqlalchemy import Engine

from cnn_ablation.storage.status import RunStatus
from cnn_ablation.studies import estimators, inference, words
from cnn_ablation.studies.effects import interaction, main_effects, versus_base
from cnn_ablation.studies.grid import adaptive_text, attempts, grid_of, progress
from cnn_ablation.studies.spec import StudySpec, StudyView
from cnn_ablation.studies.words import REPEATS_NOTE, status_line

log = logging.getLogger(__name__)


# --- results ------------------------------------------------------------------------------------
def results(engine: Engine, view: StudyView, metric: str | None = None,
            runs: pd.DataFrame | None = None, power_pp: float | None = None) -> dict:
    """Everything the page, `study show` and the report state. `runs`: `attempts(...)` if
    already at hand; `metric`: the study's primary metric unless another is asked for (then
    exploratory). Keys: runs, completed, grid, done/total/complete, and `analyse`'s."""
    spec = view.spec
    runs = attempts(engine, view) if runs is None else runs
    g = grid_of(view, runs)
    done, total = progress(view, g)
    return {"runs": runs, "grid": g, "done": done, "total": total,
            **analyse(spec, runs, metric or spec.metric, done == total, power_pp,
                      done=done, total=total)}


def analyse(spec: StudySpec, runs: pd.DataFrame, metric: str, complete: bool,
            power_pp: float | None = None, done: int | None = None,
            total: int | None = None) -> dict:
    """The statistics of a study's runs (one row per run: cell, seed, status, factor levels,
    metrics): summary (per cell, with the difference to the base cell and how many seeds
    diverged), effects (main effects of a full factorial design, else each cell vs the base),
    interactions (two-level pairs of a full factorial design) and their level tables, every
    verdict Holm-adjusted in one family, seeds_needed, the words. No database: the simulations
    in the tests call this as the page does."""
    done_runs = runs[runs["status"] == RunStatus.COMPLETED]
    cells = spec.cells()
    labels = [c.label for c in cells]
    base = spec.base_cell().label
    power_pp = 100 * spec.smallest_effect if power_pp is None else power_pp
    target = power_pp / 100
    first = spec.adaptive.first_seeds(spec.seeds) if spec.adaptive else 0
    versus = versus_base(done_runs, labels, base, metric, first)
    factorial = spec.design == "full" and bool(spec.factors)
    interactions = pd.DataFrame(columns=["factor_1", "factor_2", *estimators.EFFECT_COLUMNS])
    tables = {}
    if factorial:
        design = done_runs[done_runs["cell"].isin([c.label for c in cells if not c.extra])]
        effects = main_effects(design, spec.factors, spec.reference_levels(), metric, first)
        kind = "main effects"
        rows = []
        for f1, f2 in spec.interaction_pairs():
            table, est = interaction(design, f1, f2, spec.factors, spec.reference_levels(),
                                     metric, first)
            tables[(f1, f2)] = table
            if est is not None:
                rows.append({"factor_1": f1, "factor_2": f2, **est.row()})
        if rows:
            interactions = pd.DataFrame(rows)
        # the main effects and interactions answer the question; a design cell's Δ vs base is
        # shown as a number, and only the named cells outside the design get a verdict
        extra = {c.label for c in cells if c.extra}
        versus["judged"] = versus["cell"].isin(extra)
    else:
        effects, kind = versus[["cell", *estimators.EFFECT_COLUMNS]], "each cell vs the base"
        versus["judged"] = False  # the same comparisons as the effects: judged there once
    effects = inference.with_power(effects, target)
    interactions = inference.with_power(interactions, target)
    if factorial:  # only the named cells are judged: the seeds needed of those alone (a 96-cell
        # study would otherwise solve 95 power equations on every refresh for nothing)
        versus["seeds_needed"] = [inference.seeds_needed(sd, target) if judged else math.nan
                                  for sd, judged in zip(versus["sd"], versus["judged"],
                                                        strict=True)]
    effects, interactions, versus = inference.judge([effects, interactions, versus], complete,
                                                    spec.smallest_effect)
    if not factorial:  # the effects are the Δ vs base: one verdict, shown in both places
        versus[["p_holm", "verdict", "verdict_holm"]] = effects[["p_holm", "verdict",
                                                                  "verdict_holm"]].to_numpy()
    summary = _summary(runs, done_runs, labels, base, versus)
    # seeds needed for every statement judged: effects, interactions, named cells vs the base
    judged = [effects["seeds_needed"], interactions.get("seeds_needed", pd.Series(dtype=float))]
    if factorial:
        judged.append(versus.loc[versus["judged"], "seeds_needed"])
    needed = pd.concat([j for j in judged if len(j)] or [pd.Series(dtype=float)]).dropna()
    result = {"completed": done_runs, "complete": complete, "summary": summary,
              "effects": effects, "effects_kind": kind, "base_cell": base,
              "interactions": interactions, "tables": tables,
              "seeds_needed": float(needed.max()) if len(needed) else math.nan,
              "metric": metric, "primary": spec.metric, "power_pp": power_pp,
              "smallest_pp": 100 * spec.smallest_effect,
              "stein": first if 1 < first < spec.seeds else 0}
    result["words"] = words.plain_words(result, done, total)
    return result


def _summary(runs: pd.DataFrame, done_runs: pd.DataFrame, labels: list[str], base: str,
             versus: pd.DataFrame) -> pd.DataFrame:
    summary = estimators.cell_summary(done_runs, labels)
    summary["is_base"] = summary["cell"] == base
    delta = versus.set_index("cell")
    for column, source in (("delta", "effect"), ("delta_ci_low", "ci_low"),
                           ("delta_ci_high", "ci_high"), ("delta_n", "n"), ("delta_sd", "sd"),
                           ("delta_paired", "paired"), ("delta_p", "p"),
                           ("delta_p_holm", "p_holm"), ("delta_verdict", "verdict"),
                           ("delta_verdict_holm", "verdict_holm")):
        summary[column] = [delta[source].get(c) if c in delta.index else None
                           for c in summary["cell"]]
    summary["diverged"] = [int(n) for n in diverged_seeds(runs, labels)]
    return summary


def diverged_seeds(runs: pd.DataFrame, labels: list[str]) -> list[int]:
    """Per cell: seeds whose runs diverged and none completed (an outcome, not a missing run)."""
    statuses: dict[tuple[str, int], set[str]] = {}
    for cell, seed, status in zip(runs["cell"], runs["seed"], runs["status"], strict=True):
        statuses.setdefault((cell, int(seed)), set()).add(status)
    out = dict.fromkeys(labels, 0)
    for (cell, _), seen in statuses.items():
        if RunStatus.DIVERGED in seen and RunStatus.COMPLETED not in seen and cell in out:
            out[cell] += 1
    return [out[c] for c in labels]


def _records(frame: pd.DataFrame) -> list[dict]:

    return json.loads(frame.to_json(orient="records", default_handler=str, double_precision=15))


def result_json(view: StudyView, result: dict) -> dict:
    """Every number the Studies page shows, as JSON (`study show --json`)."""
    tables = {f"{f1} x {f2}": {str(k): v for k, v in table.to_dict().items()}
              for (f1, f2), table in result["tables"].items()}
    rule = view.spec.adaptive
    return {
        "id": view.id, "name": view.name, "spec": view.spec.to_dict(), "metric": result["metric"],
        "primary_metric": result["primary"], "exploratory": result["metric"] != result["primary"],
        "smallest_effect_pp": result["smallest_pp"],
        "stein_first_round_seeds": result["stein"] or None,
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
        "notes": words.effects_note(result),
    }
