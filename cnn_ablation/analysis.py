"""Statistics of a study as pandas frames: per-cell mean ± std and 95 % intervals, factor main
effects paired by seed (Welch's interval when seeds do not pair), interactions, mean curves.

Inputs are plain frames (one row per completed run: `cell`, `seed`, factor levels, metrics), so
every function here can be checked on a hand-made table."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cnn_ablation.config import METRICS
from cnn_ablation.study_spec import level_text

# Two-sided 95 % Student t quantiles (t_{0.975, df}) for df = 1..30.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: float) -> float:
    """t quantile for a 95 % two-sided interval; non-integer df (Welch) interpolates."""
    if not df or df < 1 or math.isnan(df):
        return math.nan
    if df <= 30:
        lo = int(math.floor(df))
        if lo == df or lo == 30:
            return _T975[lo - 1]
        return _T975[lo - 1] + (df - lo) * (_T975[lo] - _T975[lo - 1])
    z = 1.959964  # Cornish-Fisher expansion: within 0.001 of the exact value past df = 30
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int
    paired: bool

    @property
    def verdict(self) -> str:
        if math.isnan(self.low):
            return "too few runs to tell"
        if self.low > 0 or self.high < 0:
            return "beyond noise"
        return "within noise"


def mean_interval(values) -> tuple[float, float, float, float, int]:
    """mean, std, 95 % CI low, high, n (CI is NaN with fewer than 2 values)."""
    x = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    n = len(x)
    if n == 0:
        return (math.nan,) * 4 + (0,)
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan, n
    std = float(x.std(ddof=1))
    half = t975(n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half, n


def paired_difference(diffs) -> Estimate:
    mean, _, low, high, n = mean_interval(diffs)
    return Estimate(mean, low, high, n, True)


def welch_difference(a, b) -> Estimate:
    """mean(b) - mean(a) with Welch's 95 % interval."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    diff = float(b.mean() - a.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return Estimate(diff, math.nan, math.nan, len(a) + len(b), False)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Estimate(diff, diff, diff, len(a) + len(b), False)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t975(df) * se
    return Estimate(diff, diff - half, diff + half, len(a) + len(b), False)


def contrast(ref: pd.DataFrame, other: pd.DataFrame, metric: str) -> Estimate:
    """other - ref: paired by seed when they share seeds, otherwise Welch on all values."""
    a = ref.groupby("seed")[metric].mean().dropna()
    b = other.groupby("seed")[metric].mean().dropna()
    shared = a.index.intersection(b.index)
    if len(shared) >= 2 or (len(shared) == 1 and len(a) == len(b) == 1):
        return paired_difference((b[shared] - a[shared]).tolist())
    return welch_difference(a.tolist(), b.tolist())


def cell_summary(runs: pd.DataFrame, cells: list[str]) -> pd.DataFrame:
    """One row per cell: n, and mean, std, ci_low, ci_high of each metric (NaN if no runs)."""
    rows = []
    for cell in cells:
        sub = runs[runs["cell"] == cell]
        row = {"cell": cell, "n": int(len(sub))}
        for metric in METRICS:
            mean, std, low, high, _ = mean_interval(sub[metric]) if len(sub) else (math.nan,) * 5
            row.update({f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_ci_low": low,
                        f"{metric}_ci_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def main_effects(runs: pd.DataFrame, factors: dict[str, tuple], base_levels: dict[str, object],
                 metric: str = "final_val_accuracy") -> pd.DataFrame:
    """For each factor and each non-base level: mean change of `metric` when only that factor
    moves from its base level, pooled over the other factors' combinations and paired by seed.
    Sorted by size of the effect."""
    rows = []
    for factor, levels in factors.items():
        others = [f for f in factors if f != factor]
        ref_level = base_levels[factor]
        for level in levels:
            if level == ref_level:
                continue
            diffs, ref_all, other_all = [], [], []
            groups = runs.groupby(others, dropna=False) if others else [((), runs)]
            for _, group in groups:
                ref = group[group[factor] == ref_level]
                oth = group[group[factor] == level]
                if ref.empty or oth.empty:
                    continue
                a = ref.groupby("seed")[metric].mean().dropna()
                b = oth.groupby("seed")[metric].mean().dropna()
                shared = a.index.intersection(b.index)
                diffs += (b[shared] - a[shared]).tolist()
                ref_all += a.tolist()
                other_all += b.tolist()
            paired = len(diffs) >= 2
            est = paired_difference(diffs) if paired else welch_difference(ref_all, other_all)
            rows.append({"factor": factor, "change": f"{level_text(ref_level)} → {level_text(level)}",
                         "effect": est.value, "ci_low": est.low, "ci_high": est.high,
                         "n": est.n, "paired": est.paired, "verdict": est.verdict})
    frame = pd.DataFrame(rows, columns=["factor", "change", "effect", "ci_low", "ci_high", "n",
                                        "paired", "verdict"])
    return frame.reindex(frame["effect"].abs().sort_values(ascending=False).index).reset_index(
        drop=True) if len(frame) else frame


def versus_base(runs: pd.DataFrame, cells: list[str], base_cell: str,
                metric: str = "final_val_accuracy") -> pd.DataFrame:
    """Each cell minus the base cell, paired by seed."""
    ref = runs[runs["cell"] == base_cell]
    rows = []
    for cell in cells:
        if cell == base_cell:
            continue
        est = contrast(ref, runs[runs["cell"] == cell], metric)
        rows.append({"cell": cell, "effect": est.value, "ci_low": est.low, "ci_high": est.high,
                     "n": est.n, "paired": est.paired, "verdict": est.verdict})
    return pd.DataFrame(rows, columns=["cell", "effect", "ci_low", "ci_high", "n", "paired",
                                       "verdict"])


def interaction(runs: pd.DataFrame, f1: str, f2: str, metric: str = "final_val_accuracy"):
    """Mean `metric` for each (f1, f2) level pair, and for 2x2 the interaction contrast
    (effect of f2 when f1 is at its second level minus when at its first), paired by seed."""
    table = runs.pivot_table(index=f1, columns=f2, values=metric, aggfunc="mean")
    l1, l2 = sorted(runs[f1].unique()), sorted(runs[f2].unique())
    if len(l1) != 2 or len(l2) != 2:
        return table, None
    cells = {(a, b): runs[(runs[f1] == a) & (runs[f2] == b)].groupby("seed")[metric].mean()
             for a in l1 for b in l2}
    seeds = set.intersection(*(set(v.index) for v in cells.values()))
    diffs = [(cells[l1[1], l2[1]][s] - cells[l1[1], l2[0]][s])
             - (cells[l1[0], l2[1]][s] - cells[l1[0], l2[0]][s]) for s in sorted(seeds)]
    return table, paired_difference(diffs) if diffs else None


def cell_curves(epochs: pd.DataFrame, runs: pd.DataFrame, metric: str = "val_accuracy"):
    """Per cell and epoch: mean, std and n of `metric` over the cell's runs."""
    merged = epochs.merge(runs[["run_id", "cell"]], on="run_id")
    grouped = merged.groupby(["cell", "epoch"], sort=False)[metric]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def plain_words(effects: pd.DataFrame, metric_name: str = "final validation accuracy") -> str:
    """What mattered beyond noise and what did not, in sentences."""
    if effects.empty:
        return "No effects yet: they appear once cells have completed runs."
    name = "factor" if "factor" in effects else "cell"
    parts = []
    beyond = effects[effects["verdict"] == "beyond noise"]
    within = effects[effects["verdict"] == "within noise"]
    unknown = effects[effects["verdict"] == "too few runs to tell"]
    for _, r in beyond.iterrows():
        what = f"{r[name]} ({r['change']})" if name == "factor" else r[name]
        direction = "raised" if r["effect"] > 0 else "lowered"
        parts.append(f"**{what}** {direction} {metric_name} by {abs(100 * r['effect']):.1f} "
                     f"points (95 % CI {100 * r['ci_low']:+.1f} to {100 * r['ci_high']:+.1f}).")
    if len(within):
        names = ", ".join(f"{r[name]}" for _, r in within.iterrows())
        parts.append(f"Within noise (the 95 % interval includes zero): {names}.")
    if len(unknown):
        names = ", ".join(f"{r[name]}" for _, r in unknown.iterrows())
        parts.append(f"Too few completed seeds to tell: {names}; add seeds or fill missing.")
    if beyond.empty:
        parts.insert(0, "No switch moved the result beyond run-to-run noise.")
    return " ".join(parts)


def readable_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The cell summary as people read it: `71.2 ± 0.8 % [70.1, 72.3]` per metric."""
    def text(row, metric):
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        if pd.isna(mean):
            return "–"
        out = f"{100 * mean:.1f}"
        out += f" ± {100 * std:.1f} %" if not pd.isna(std) else " %"
        if not pd.isna(row[f"{metric}_ci_low"]):
            out += f" [{100 * row[f'{metric}_ci_low']:.1f}, {100 * row[f'{metric}_ci_high']:.1f}]"
        return out

    return pd.DataFrame({"cell": summary["cell"], "runs": summary["n"],
                         **{name: [text(r, m) for _, r in summary.iterrows()]
                            for m, name in METRICS.items()}})


def readable_effects(effects: pd.DataFrame) -> pd.DataFrame:
    """Effects in percentage points with their interval, e.g. `-2.1 pp [-3.0, -1.2]`."""
    def text(r):
        if pd.isna(r["effect"]):
            return "–"
        out = f"{100 * r['effect']:+.1f} pp"
        if not pd.isna(r["ci_low"]):
            out += f" [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]"
        return out

    name = "factor" if "factor" in effects else "cell"
    columns = {name: effects[name]}
    if "change" in effects:
        columns["change"] = effects["change"]
    columns.update({"effect (95 % CI)": [text(r) for _, r in effects.iterrows()],
                    "pairs/runs": effects["n"],
                    "paired by seed": effects["paired"].map({True: "yes", False: "no"}),
                    "verdict": effects["verdict"]})
    return pd.DataFrame(columns)
