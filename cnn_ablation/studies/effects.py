"""Effects of a study's switches, from its per-seed cell values (`estimators.seed_means`): main
effects of a full factorial (per seed, the mean over the other factors at one level minus the
same at the reference level), each cell against the base cell (one at a time, named cells), and
two-level interactions (per seed, the difference of differences); paired by seed, else Welch."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pandas as pd

from cnn_ablation.studies.estimators import (
    EFFECT_COLUMNS,
    Estimate,
    compare,
    paired_difference,
    seed_means,
    stein_first,
    values_by_cell,
    welch_contrast,
)
from cnn_ablation.studies.factors import level_text

# --- effects ------------------------------------------------------------------------------------
SeedValues = dict[int, float]  # one cell's value per seed


def _by_levels(means: pd.DataFrame, factors: list[str]) -> dict[tuple, SeedValues]:
    """Per-seed values of each cell (from `seed_means`), keyed by its factor levels in order."""
    out: dict[tuple, SeedValues] = {}
    keys = zip(*(means[f] for f in factors), strict=True) if factors else ((),) * len(means)
    for key, seed, value in zip(keys, means["seed"], means["value"], strict=True):
        out.setdefault(tuple(key), {})[int(seed)] = float(value)
    return out


def contrast(cells: list[tuple[float, SeedValues]], first: int = 0) -> Estimate:
    """Σ coef·cell over cells given as per-seed values: computed within each seed and the
    interval taken over seeds (paired) where at least two seeds have every cell (Stein's
    interval when `first` > 1, see `estimators.paired_difference`); otherwise Welch's interval
    for the same contrast of cell means (`welch_contrast`)."""
    shared = set.intersection(*(set(values) for _, values in cells)) if cells else set()
    if len(shared) >= 2:
        seeds = sorted(shared)
        return paired_difference([sum(coef * values[s] for coef, values in cells)
                                  for s in seeds], stein_first(seeds, first))
    return welch_contrast([(coef, list(values.values())) for coef, values in cells])


def _combos(factors: dict[str, tuple], others: list[str]) -> list[dict]:
    return [dict(zip(others, values, strict=True))
            for values in product(*(factors[o] for o in others))]


def main_effects(runs: pd.DataFrame, factors: dict[str, tuple], reference: dict[str, object],
                 metric: str = "final_val_accuracy", first: int = 0) -> pd.DataFrame:
    """For each factor and each level other than its reference: the change in `metric` when
    only that factor moves, averaged over the other factors' combinations within each seed, with
    the interval over seeds (Welch's where seeds do not pair). `runs`: the design's cells of a
    full factorial study. Sorted by the size of the effect."""
    names = list(factors)
    cells = _by_levels(seed_means(runs, metric, names), names)

    def at(levels: dict[str, object]) -> SeedValues:
        return cells.get(tuple(levels[f] for f in names), {})

    rows = []
    for factor, levels in factors.items():
        combos = _combos(factors, [f for f in factors if f != factor])
        ref_level = reference[factor]
        for level in levels:
            if level == ref_level:
                continue
            weight = 1 / len(combos)
            est = contrast([(-weight, at({**combo, factor: ref_level})) for combo in combos]
                           + [(weight, at({**combo, factor: level})) for combo in combos],
                           first)
            rows.append({"factor": factor,
                         "change": f"{level_text(ref_level)} → {level_text(level)}", **est.row()})
    return _sorted(pd.DataFrame(rows, columns=["factor", "change", *EFFECT_COLUMNS]))


def versus_base(runs: pd.DataFrame, cells: list[str], base_cell: str,
                metric: str = "final_val_accuracy", first: int = 0) -> pd.DataFrame:
    """Each cell minus the base cell, per seed (paired by seed, else Welch), in cell order."""
    values = values_by_cell(seed_means(runs, metric))
    none = pd.Series(dtype=float)
    ref = values.get(base_cell, none)
    rows = [{"cell": cell, **compare(ref, values.get(cell, none), first).row()}
            for cell in cells if cell != base_cell]
    return pd.DataFrame(rows, columns=["cell", *EFFECT_COLUMNS])


def interaction(runs: pd.DataFrame, f1: str, f2: str, factors: dict[str, tuple],
                reference: dict[str, object], metric: str = "final_val_accuracy",
                first: int = 0):
    """Mean `metric` for each (f1, f2) level pair (over seeds and the other factors), and the
    interaction: how much the effect of f2 changes when f1 moves from its reference level,
    (y11 - y10) - (y01 - y00) per seed, paired over the seeds that have all four. Only for two
    factors of two levels each in a full factorial design (None otherwise)."""
    names = list(factors)
    by_levels = _by_levels(seed_means(runs, metric, names), names)
    combos = _combos(factors, [f for f in factors if f not in (f1, f2)])
    l1 = sorted(factors[f1], key=lambda v: v != reference[f1])
    l2 = sorted(factors[f2], key=lambda v: v != reference[f2])
    cells = {(a, b): [by_levels.get(tuple({**combo, f1: a, f2: b}[f] for f in names), {})
                      for combo in combos] for a in l1 for b in l2}
    table = pd.DataFrame({level_text(b): [float(np.mean([np.mean(list(v.values()))
                                                         for v in cells[a, b]]))
                                          if all(cells[a, b]) else math.nan
                                          for a in l1] for b in l2},
                         index=pd.Index([level_text(a) for a in l1], name=f1))
    table.columns.name = f2
    if len(l1) != 2 or len(l2) != 2:
        return table, None
    weight = 1 / len(combos)
    signs = {(l1[1], l2[1]): 1, (l1[1], l2[0]): -1, (l1[0], l2[1]): -1, (l1[0], l2[0]): 1}
    return table, contrast([(sign * weight, values) for key, sign in signs.items()
                            for values in cells[key]], first)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    order = frame["effect"].abs().sort_values(ascending=False, na_position="last").index
    return frame.reindex(order).reset_index(drop=True)
