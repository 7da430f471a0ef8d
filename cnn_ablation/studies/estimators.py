"""Statistics of a study as pandas frames, on scipy.stats and statsmodels: the estimators (one
value per (cell, seed), cell summaries, t intervals, paired and Welch differences) here; effects in
`effects`, verdicts, Holm and power in `inference`, words in `words`.

The unit of replication is the seed. Repeats of one (cell, seed) (the same config and seed run
twice) are averaged first (`seed_means`): they share every random choice, so counting them as
separate runs would shrink the intervals for nothing. Then:

- a cell: mean ± std over its seeds, 95 % t interval of the mean;
- a main effect (full factorial designs): per seed, the mean over the other factors'
  combinations at the changed level minus the same at the reference level; the interval is the
  one-sample t interval of those per-seed effects (a paired t-test by seed). Where seeds do not
  pair, Welch's interval on the per-seed values of each side (`ttest_ind(equal_var=False)`);
- a cell against the base cell (one-at-a-time designs, named cells): paired by seed, or Welch;
- an interaction (full factorial, two factors with two levels each): per seed, the difference
  of differences, paired over seeds;
- several effects at once: Holm-adjusted p-values beside the raw intervals (statsmodels);
- seeds per cell to detect an effect of X pp with 80 % power, from each effect's observed
  seed-to-seed spread (statsmodels' `TTestPower`).

Inputs are plain frames (one row per completed run: `cell`, `seed`, factor levels, metrics), so
every function here can be checked against scipy on a hand-made table."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cnn_ablation.config import METRICS

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.80
# Verdicts. "within noise": the interval holds zero and lies inside ± the smallest effect that
# matters; "inconclusive": it holds zero but reaches past that, so an effect that matters is not
# ruled out. Every seed moved by exactly as much: "beyond noise" (p 0) for a shift, "no change"
# when that shift is zero.
BEYOND, WITHIN, INCONCLUSIVE, TOO_FEW, NO_CHANGE, NO_VALUES, PROVISIONAL = (
    "beyond noise", "within noise", "inconclusive", "too few seeds to tell",
    "no change in any seed", "no values", "provisional")
NO_SPREAD_BELOW = 1e-12  # a spread this small is rounding: the values are equal
EFFECT_COLUMNS = ["effect", "ci_low", "ci_high", "n", "paired", "p", "sd"]


@dataclass(frozen=True)
class Estimate:
    """A difference with its 95 % interval. `n`: seeds (pairs when paired, both sides' seeds
    when not); `sd`: spread of one seed's difference (paired: of the per-seed differences;
    Welch: sqrt(var_a + var_b)), what the power calculation needs."""

    value: float
    low: float
    high: float
    n: int
    paired: bool
    p: float = math.nan
    sd: float = math.nan

    @property
    def verdict(self) -> str:
        return verdict_of(self.value, self.low, self.high, self.sd, p=self.p)

    def row(self) -> dict[str, object]:
        return {"effect": self.value, "ci_low": self.low, "ci_high": self.high, "n": self.n,
                "paired": self.paired, "p": self.p, "sd": self.sd}


def verdict_of(value: float, low: float, high: float, sd: float = math.nan,
               smallest: float = math.nan, p: float = math.nan) -> str:
    """One interval's verdict. `smallest`: the smallest effect that matters (a fraction); an
    interval that holds zero but reaches past ±`smallest` is inconclusive (NaN: never). Every
    seed moved by exactly `value` (sd 0): no change, or a shift judged by its exact p (`p`)."""
    if pd.isna(value):
        return NO_VALUES
    if sd == 0:
        if value == 0:
            return NO_CHANGE
        return BEYOND if p < ALPHA else TOO_FEW
    if pd.isna(low) or pd.isna(high):
        return TOO_FEW
    if low > 0 or high < 0:
        return BEYOND
    return INCONCLUSIVE if low < -smallest or high > smallest else WITHIN


def _clean(values) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)


def mean_interval(values) -> tuple[float, float, float, float, int]:
    """mean, std (ddof 1), 95 % t interval of the mean (low, high), n. The interval is NaN with
    fewer than 2 values, and the mean itself when they are all equal."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return (math.nan,) * 4 + (0,)
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan, n
    std = float(x.std(ddof=1))
    if std <= NO_SPREAD_BELOW:
        return mean, 0.0, mean, mean, n
    low, high, _ = _t_interval(mean, std / math.sqrt(n), n - 1)
    return mean, std, low, high, n


def _t_interval(mean: float, se: float, df: int) -> tuple[float, float, float]:
    """(low, high, p) of the 95 % t interval mean ± t(df)·se and the two-sided p for mean = 0,
    on scipy's t distribution: what `ttest_1samp(...).confidence_interval()` gives, without
    its per-call overhead (a simulation of thousands of studies calls this 10^5 times)."""
    from scipy import stats  # type: ignore[import-untyped]  # on first use: 0.5 s to import
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    return mean - half, mean + half, float(2 * stats.t.sf(abs(mean) / se, df))


def paired_difference(diffs, first: int = 0) -> Estimate:
    """The mean of per-seed differences with its one-sample (= paired) t interval and p.

    `first` > 1 and fewer than all values: Stein's two-stage interval. The values are in seed
    order and the first `first` are the first round's, whose spread alone decided how many seeds
    there would be (the adaptive rule): mean of all n ± t(first - 1) · s_first / √n, p from the
    same t. Its 95 % holds exactly, whatever the first round's spread happened to be; the usual
    interval on all n would not (a lucky small spread stops early and narrow)."""
    x = _clean(diffs)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, True)
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, n, True)
    sd = float(x.std(ddof=1))
    if sd <= NO_SPREAD_BELOW:  # every seed moved by exactly as much: a shift, or no change
        # Accuracies move in steps (1 of 10 validation images is 10 points), so equal moves
        # happen by chance: the exact sign-flip p of n equal-signed differences, 2^(1-n)
        # (2 seeds: 0.5, 6 seeds: 0.03), never 0
        return Estimate(mean, mean, mean, n, True, min(1.0, 2.0 ** (1 - n)) if mean != 0
                        else 1.0, 0.0)
    if 1 < first < n:
        sd_first = float(x[:first].std(ddof=1))
        if sd_first > NO_SPREAD_BELOW:
            low, high, p = _t_interval(mean, sd_first / math.sqrt(n), first - 1)
            return Estimate(mean, low, high, n, True, p, sd)
    low, high, p = _t_interval(mean, sd / math.sqrt(n), n - 1)
    return Estimate(mean, low, high, n, True, p, sd)


def _exact(value: float, sizes: list[int]) -> Estimate:
    """No spread on any side: a point interval, and for a shift the exact permutation p of
    groups this far apart (the most extreme split of the pooled values: 2 / C(n, n_1) for two
    groups), never 0; 1 for no change."""
    n = sum(sizes)
    p = min(1.0, 2.0 / math.comb(n, sizes[0])) if value != 0 and len(sizes) == 2 else \
        (math.nan if value != 0 else 1.0)
    return Estimate(value, value, value, n, False, p, 0.0)


def welch_difference(a, b) -> Estimate:
    """mean(b) - mean(a) with Welch's 95 % interval and p (`ttest_ind(equal_var=False)`)."""
    from scipy import stats  # on first use: 0.5 s to import
    a, b = _clean(a), _clean(b)
    n = len(a) + len(b)
    diff = float(b.mean() - a.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return Estimate(diff, math.nan, math.nan, n, False)
    sd = math.sqrt(a.var(ddof=1) + b.var(ddof=1))
    if sd <= NO_SPREAD_BELOW:
        return _exact(diff, [len(a), len(b)])
    test = stats.ttest_ind(b, a, equal_var=False)
    ci = test.confidence_interval(CONFIDENCE)
    return Estimate(diff, float(ci.low), float(ci.high), n, False, float(test.pvalue), sd)


def welch_contrast(groups: list[tuple[float, object]]) -> Estimate:
    """Σ coef·mean(group) over independent groups with Welch's interval (Welch–Satterthwaite
    degrees of freedom, scipy's t quantile). Two groups with coefficients -1, +1 are exactly
    `ttest_ind(b, a, equal_var=False)`, which is what is called then. `sd`: the spread of one
    seed's contrast, sqrt(Σ coef²·var), for the power calculation."""
    from scipy import stats  # on first use: 0.5 s to import
    clean = [(float(c), _clean(v)) for c, v in groups]
    n = sum(len(v) for _, v in clean)
    if any(len(v) == 0 for _, v in clean):
        return Estimate(math.nan, math.nan, math.nan, n, False)
    value = float(sum(c * v.mean() for c, v in clean))
    if [c for c, _ in clean] == [-1.0, 1.0]:
        return welch_difference(clean[0][1], clean[1][1])
    if any(len(v) < 2 for _, v in clean):
        return Estimate(value, math.nan, math.nan, n, False)
    parts = [c * c * v.var(ddof=1) / len(v) for c, v in clean]
    se2 = float(sum(parts))
    sd = math.sqrt(sum(c * c * v.var(ddof=1) for c, v in clean))
    if sd <= NO_SPREAD_BELOW:
        return _exact(value, [len(v) for _, v in clean])
    df = se2**2 / sum(p**2 / (len(v) - 1) for p, (_, v) in zip(parts, clean, strict=True))
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * math.sqrt(se2)
    p = float(2 * stats.t.sf(abs(value) / math.sqrt(se2), df))
    return Estimate(value, value - half, value + half, n, False, p, sd)


def compare(a: pd.Series, b: pd.Series, first: int = 0) -> Estimate:
    """b - a for two series indexed by seed: paired over the shared seeds when there are at
    least two (Stein's interval when `first` > 1: see `paired_difference`), otherwise Welch on
    all values of each side."""
    a, b = a.dropna(), b.dropna()
    shared = a.index.intersection(b.index).sort_values()
    if len(shared) >= 2 or (len(shared) == 1 and len(a) == len(b) == 1):
        return paired_difference((b[shared] - a[shared]).tolist(), stein_first(shared, first))
    return welch_difference(a.tolist(), b.tolist())


def stein_first(seeds, first: int) -> int:
    """`first` when every seed of the first round (0..first-1) is among `seeds` (sorted), else
    0: without all of them the first round's spread cannot be had, and the usual interval is
    used."""
    return first if first > 1 and set(range(first)) <= set(int(s) for s in seeds) else 0


# --- one value per (cell, seed) -----------------------------------------------------------------
def seed_means(runs: pd.DataFrame, metric: str, factors=()) -> pd.DataFrame:
    """One row per (cell, seed): the mean of `metric` over that seed's runs (repeats of the same
    config and seed are averaged first), how many runs it holds (`repeats`), factor levels."""
    factors = list(factors)
    columns = ["cell", "seed", *factors, "value", "repeats"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    # plain Python over the rows: a study holds hundreds to thousands of runs, where this is
    # several times faster than a pandas groupby (the page and the simulations call it often)
    sums: dict[tuple, list] = {}
    for key, value in zip(zip(runs["cell"], runs["seed"], strict=True), runs[metric],
                          strict=True):
        if value is None or value != value:  # None or NaN
            continue
        entry = sums.setdefault(key, [0.0, 0])
        entry[0] += float(value)
        entry[1] += 1
    if not sums:
        return pd.DataFrame(columns=columns)
    out = pd.DataFrame([(cell, seed, total / count, count)
                        for (cell, seed), (total, count) in sums.items()],
                       columns=["cell", "seed", "value", "repeats"])
    if factors:
        levels = runs.drop_duplicates("cell").set_index("cell")[factors]
        for factor in factors:  # a cell's levels are the same for every run of it
            out[factor] = out["cell"].map(levels[factor])
    return out[columns]


def cell_values(means: pd.DataFrame, cell: str) -> pd.Series:
    """A cell's per-seed values (from `seed_means`), indexed by seed."""
    rows = means[means["cell"] == cell]
    return pd.Series(rows["value"].to_numpy(dtype=float), index=rows["seed"].to_numpy())


def values_by_cell(means: pd.DataFrame) -> dict[str, pd.Series]:
    """`cell_values` of every cell at once (one pass over `means`, not one mask per cell: a
    study of 100 cells would otherwise scan its frame 100 times)."""
    return {cell: pd.Series(rows["value"].to_numpy(dtype=float), index=rows["seed"].to_numpy())
            for cell, rows in means.groupby("cell", sort=False)}


def cell_summary(runs: pd.DataFrame, cells: list[str]) -> pd.DataFrame:
    """One row per cell: `runs` (completed runs), `n` (seeds: repeats of a seed averaged first),
    and mean, std, ci_low, ci_high over seeds of each metric (NaN where there are none); the
    interval is clipped to [0, 1] where the t interval reaches past it (`<metric>_clipped`)."""
    rows = []
    values = {m: values_by_cell(seed_means(runs, m)) for m in METRICS}
    counts: dict[str, tuple[int, int]] = {}
    if len(runs):
        grouped = runs.groupby("cell")["seed"].agg(["size", "nunique"])
        counts = {str(c): (int(r["size"]), int(r["nunique"])) for c, r in grouped.iterrows()}
    none = pd.Series(dtype=float)
    for cell in cells:
        size, seeds = counts.get(cell, (0, 0))
        row: dict[str, object] = {"cell": cell, "runs": size, "n": seeds}
        for metric in METRICS:
            mean, std, low, high, _ = mean_interval(values[metric].get(cell, none))
            # an accuracy lies in [0, 1]: a t interval reaching past it is cut there, and says so
            clipped = bool(low < 0 or high > 1)
            row.update({f"{metric}_mean": mean, f"{metric}_std": std,
                        f"{metric}_ci_low": max(low, 0.0) if clipped else low,
                        f"{metric}_ci_high": min(high, 1.0) if clipped else high,
                        f"{metric}_clipped": clipped})
        rows.append(row)
    return pd.DataFrame(rows)


# --- curves -------------------------------------------------------------------------------------
def cell_curves(epochs: pd.DataFrame, runs: pd.DataFrame, metric: str = "val_accuracy"):
    """Per cell and epoch: mean, std and n of `metric` over the cell's seeds (repeats of a seed
    averaged first)."""
    merged = epochs.merge(runs[["run_id", "cell", "seed"]], on="run_id")
    per_seed = merged.groupby(["cell", "seed", "epoch"], sort=False)[metric].mean().reset_index()
    grouped = per_seed.groupby(["cell", "epoch"], sort=False)[metric]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


