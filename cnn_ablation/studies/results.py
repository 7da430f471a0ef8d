"""A study's results: from its runs, one value per (cell, seed), each cell's summary, the effects
(main, against the base, interactions) with verdicts, Holm and power, and the precision rule's
state: everything the page, `study show` and the report state."""

from __future__ import annotations

import json
import logging
import math

import pandas as pd
from sqlalchemy import Engine

from cnn_ablation.config import METRICS
from cnn_ablation.studies import estimators, inference, words
from cnn_ablation.studies.effects import interaction, main_effects, versus_base
from cnn_ablation.studies.grid import adaptive_text, attempts, grid_of, progress
from cnn_ablation.studies.spec import StudyView
from cnn_ablation.studies.words import REPEATS_NOTE, status_line
from storage.status import RunStatus

log = logging.getLogger(__name__)


DEFAULT_POWER_PP = 1.0  # the effect size (percentage points) the "seeds needed" column is for


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
    g = grid_of(view, runs)
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


def _records(frame: pd.DataFrame) -> list[dict]:

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
