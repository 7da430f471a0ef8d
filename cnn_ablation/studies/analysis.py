"""Statistics of a study as pandas frames, on scipy.stats and statsmodels.

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

import gc
import math
from dataclasses import dataclass
from itertools import product

import numpy as np
import pandas as pd
from scipy import stats  # type: ignore[import-untyped]

from cnn_ablation.config import METRICS
from cnn_ablation.studies.spec import level_text

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.80
BEYOND, WITHIN, TOO_FEW, NO_SPREAD, PROVISIONAL = (
    "beyond noise", "within noise", "too few seeds to tell", "no seed-to-seed spread",
    "provisional")
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
        return verdict_of(self.low, self.high, self.sd)

    def row(self) -> dict[str, object]:
        return {"effect": self.value, "ci_low": self.low, "ci_high": self.high, "n": self.n,
                "paired": self.paired, "p": self.p, "sd": self.sd}


def verdict_of(low: float, high: float, sd: float = math.nan) -> str:
    if sd == 0:
        return NO_SPREAD
    if pd.isna(low) or pd.isna(high):
        return TOO_FEW
    return BEYOND if low > 0 or high < 0 else WITHIN


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
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
    return mean, std, float(ci.low), float(ci.high), n


def paired_difference(diffs) -> Estimate:
    """The mean of per-seed differences with its one-sample (= paired) t interval and p."""
    x = _clean(diffs)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, True)
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, n, True)
    sd = float(x.std(ddof=1))
    if sd <= NO_SPREAD_BELOW:  # every seed moved by as much: no interval can be had from spread
        return Estimate(mean, math.nan, math.nan, n, True, math.nan, 0.0)
    test = stats.ttest_1samp(x, 0.0)
    ci = test.confidence_interval(CONFIDENCE)
    return Estimate(mean, float(ci.low), float(ci.high), n, True, float(test.pvalue), sd)


def welch_difference(a, b) -> Estimate:
    """mean(b) - mean(a) with Welch's 95 % interval and p (`ttest_ind(equal_var=False)`)."""
    a, b = _clean(a), _clean(b)
    n = len(a) + len(b)
    diff = float(b.mean() - a.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return Estimate(diff, math.nan, math.nan, n, False)
    sd = math.sqrt(a.var(ddof=1) + b.var(ddof=1))
    if sd <= NO_SPREAD_BELOW:
        return Estimate(diff, math.nan, math.nan, n, False, math.nan, 0.0)
    test = stats.ttest_ind(b, a, equal_var=False)
    ci = test.confidence_interval(CONFIDENCE)
    return Estimate(diff, float(ci.low), float(ci.high), n, False, float(test.pvalue), sd)


def welch_contrast(groups: list[tuple[float, object]]) -> Estimate:
    """Σ coef·mean(group) over independent groups with Welch's interval (Welch–Satterthwaite
    degrees of freedom, scipy's t quantile). Two groups with coefficients -1, +1 are exactly
    `ttest_ind(b, a, equal_var=False)`, which is what is called then. `sd`: the spread of one
    seed's contrast, sqrt(Σ coef²·var), for the power calculation."""
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
        return Estimate(value, math.nan, math.nan, n, False, math.nan, 0.0)
    df = se2**2 / sum(p**2 / (len(v) - 1) for p, (_, v) in zip(parts, clean, strict=True))
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * math.sqrt(se2)
    p = float(2 * stats.t.sf(abs(value) / math.sqrt(se2), df))
    return Estimate(value, value - half, value + half, n, False, p, sd)


def compare(a: pd.Series, b: pd.Series) -> Estimate:
    """b - a for two series indexed by seed: paired over the shared seeds when there are at
    least two, otherwise Welch on all values of each side."""
    a, b = a.dropna(), b.dropna()
    shared = a.index.intersection(b.index)
    if len(shared) >= 2 or (len(shared) == 1 and len(a) == len(b) == 1):
        return paired_difference((b[shared] - a[shared]).tolist())
    return welch_difference(a.tolist(), b.tolist())


# --- one value per (cell, seed) -----------------------------------------------------------------
def seed_means(runs: pd.DataFrame, metric: str, factors=()) -> pd.DataFrame:
    """One row per (cell, seed): the mean of `metric` over that seed's runs (repeats of the same
    config and seed are averaged first), how many runs it holds (`repeats`), factor levels."""
    factors = list(factors)
    columns = ["cell", "seed", *factors, "value", "repeats"]
    rows = runs.dropna(subset=[metric]) if len(runs) else runs
    if rows.empty:
        return pd.DataFrame(columns=columns)
    out = rows.groupby(["cell", "seed"], sort=False)[metric].agg(
        value="mean", repeats="count").reset_index()
    if factors:
        levels = rows.drop_duplicates("cell").set_index("cell")[factors]
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
    and mean, std, ci_low, ci_high over seeds of each metric (NaN where there are none)."""
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
            row.update({f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_ci_low": low,
                        f"{metric}_ci_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


# --- effects ------------------------------------------------------------------------------------
SeedValues = dict[int, float]  # one cell's value per seed


def _by_levels(means: pd.DataFrame, factors: list[str]) -> dict[tuple, SeedValues]:
    """Per-seed values of each cell (from `seed_means`), keyed by its factor levels in order."""
    out: dict[tuple, SeedValues] = {}
    keys = zip(*(means[f] for f in factors), strict=True) if factors else ((),) * len(means)
    for key, seed, value in zip(keys, means["seed"], means["value"], strict=True):
        out.setdefault(tuple(key), {})[int(seed)] = float(value)
    return out


def contrast(cells: list[tuple[float, SeedValues]]) -> Estimate:
    """Σ coef·cell over cells given as per-seed values: computed within each seed and the
    interval taken over seeds (paired) where at least two seeds have every cell; otherwise
    Welch's interval for the same contrast of cell means (`welch_contrast`)."""
    shared = set.intersection(*(set(values) for _, values in cells)) if cells else set()
    if len(shared) >= 2:
        return paired_difference([sum(coef * values[s] for coef, values in cells)
                                  for s in sorted(shared)])
    return welch_contrast([(coef, list(values.values())) for coef, values in cells])


def _combos(factors: dict[str, tuple], others: list[str]) -> list[dict]:
    return [dict(zip(others, values, strict=True))
            for values in product(*(factors[o] for o in others))]


def main_effects(runs: pd.DataFrame, factors: dict[str, tuple], reference: dict[str, object],
                 metric: str = "final_val_accuracy") -> pd.DataFrame:
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
                           + [(weight, at({**combo, factor: level})) for combo in combos])
            rows.append({"factor": factor,
                         "change": f"{level_text(ref_level)} → {level_text(level)}", **est.row()})
    return _sorted(pd.DataFrame(rows, columns=["factor", "change", *EFFECT_COLUMNS]))


def versus_base(runs: pd.DataFrame, cells: list[str], base_cell: str,
                metric: str = "final_val_accuracy") -> pd.DataFrame:
    """Each cell minus the base cell, per seed (paired by seed, else Welch), in cell order."""
    values = values_by_cell(seed_means(runs, metric))
    none = pd.Series(dtype=float)
    ref = values.get(base_cell, none)
    rows = [{"cell": cell, **compare(ref, values.get(cell, none)).row()}
            for cell in cells if cell != base_cell]
    return pd.DataFrame(rows, columns=["cell", *EFFECT_COLUMNS])


def interaction(runs: pd.DataFrame, f1: str, f2: str, factors: dict[str, tuple],
                reference: dict[str, object], metric: str = "final_val_accuracy"):
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
                            for values in cells[key]])


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    order = frame["effect"].abs().sort_values(ascending=False, na_position="last").index
    return frame.reindex(order).reset_index(drop=True)


# --- several effects, verdicts, power -----------------------------------------------------------
def with_verdicts(effects: pd.DataFrame, complete: bool = True) -> pd.DataFrame:
    """`verdict` from each raw interval, and Holm's adjustment over the effects that have a p
    (`p_holm`, `verdict_holm`). While the study is incomplete both verdicts read
    "provisional": numbers may be shown, judgements not."""
    out = effects.copy()
    out["verdict"] = [verdict_of(r["ci_low"], r["ci_high"], r["sd"]) for _, r in out.iterrows()]
    out["p_holm"] = holm(out["p"].tolist()) if len(out) else []
    out["verdict_holm"] = [
        (BEYOND if p < ALPHA else WITHIN) if not pd.isna(p) else v
        for p, v in zip(out["p_holm"], out["verdict"], strict=True)]
    if not complete:
        out["verdict"] = PROVISIONAL
        out["verdict_holm"] = PROVISIONAL
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels' multipletests); NaN stays NaN."""
    from statsmodels.stats.multitest import multipletests  # type: ignore[import-untyped]

    known = [i for i, p in enumerate(pvalues) if not pd.isna(p)]
    out = [math.nan] * len(pvalues)
    if known:
        # multipletests' Holm branch calls gc.collect(), which costs ~0.25 s in a process with
        # a big heap (a Streamlit server): freeze the heap for the call so it scans nothing old
        gc.freeze()
        try:
            adjusted = multipletests([pvalues[i] for i in known], alpha=ALPHA,
                                     method="holm")[1]
        finally:
            gc.unfreeze()
        for i, p in zip(known, adjusted, strict=True):
            out[i] = float(p)
    return out


def seeds_needed(sd: float, target: float) -> float:
    """Seeds per cell for a paired t-test (two-sided, 5 %) to detect a change of `target` with
    80 % power when one seed's difference varies by `sd` (statsmodels' TTestPower). At least 2.
    NaN when the spread is unknown."""
    if pd.isna(sd) or not target > 0:
        return math.nan
    if sd == 0:
        return 2.0
    import warnings

    from statsmodels.stats.power import TTestPower  # type: ignore[import-untyped]
    from statsmodels.tools import sm_exceptions  # type: ignore[import-untyped]  # noqa: F401
    # (imported first: it installs an "always" filter that would override the one below)

    effect_size = target / sd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no convergence: NaN, handled below
        try:
            n = float(np.asarray(TTestPower().solve_power(
                effect_size=effect_size, nobs=None, alpha=ALPHA, power=POWER,
                alternative="two-sided")).item())
        except (ValueError, RuntimeError):
            n = math.nan
    if math.isfinite(n):
        return float(max(2, math.ceil(n)))
    # statsmodels' noncentral t is NaN for large effect sizes (a few seeds suffice): count up
    for seeds in range(2, 10_001):
        if _paired_power(effect_size, seeds) >= POWER:
            return float(seeds)
    return math.nan


def _paired_power(effect_size: float, n: int) -> float:
    """Power of the two-sided one-sample t-test, by integrating over the chi-square part of the
    t statistic (numerically stable where scipy's noncentral t is not)."""
    from scipy import integrate

    df = n - 1
    crit = float(stats.t.ppf(1 - ALPHA / 2, df))
    shift = effect_size * math.sqrt(n)

    def given(v: float) -> float:
        scale = crit * math.sqrt(v / df)
        return float((stats.norm.cdf(shift - scale) + stats.norm.cdf(-shift - scale))
                     * stats.chi2.pdf(v, df))

    return float(integrate.quad(given, 0, math.inf, limit=200)[0])


def with_power(effects: pd.DataFrame, target: float) -> pd.DataFrame:
    """`seeds_needed` for a change of `target` (a fraction: 0.01 = 1 pp) per effect."""
    out = effects.copy()
    out["seeds_needed"] = [seeds_needed(sd, target) for sd in out["sd"]] if len(out) else []
    return out


def half_widths(effects: pd.DataFrame) -> pd.Series:
    return (effects["ci_high"] - effects["ci_low"]) / 2


# --- curves -------------------------------------------------------------------------------------
def cell_curves(epochs: pd.DataFrame, runs: pd.DataFrame, metric: str = "val_accuracy"):
    """Per cell and epoch: mean, std and n of `metric` over the cell's seeds (repeats of a seed
    averaged first)."""
    merged = epochs.merge(runs[["run_id", "cell", "seed"]], on="run_id")
    per_seed = merged.groupby(["cell", "seed", "epoch"], sort=False)[metric].mean().reset_index()
    grouped = per_seed.groupby(["cell", "epoch"], sort=False)[metric]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


# --- words --------------------------------------------------------------------------------------
def provisional_text(done: int, total: int) -> str:
    return (f"Provisional: {done} of {total} runs. No verdict until every cell has all its "
            "seeds; the numbers below can still move.")


def plain_words(effects: pd.DataFrame, metric_name: str = "final validation accuracy",
                done: int | None = None, total: int | None = None) -> str:
    """What mattered beyond noise and what did not, in sentences; only for a complete study
    (`done` == `total`): otherwise only that it is provisional. With several effects the
    verdict is Holm's."""
    if done is not None and total is not None and done < total:
        return provisional_text(done, total)
    if effects.empty:
        return "No effects: the study has no cells to compare."
    name = "factor" if "factor" in effects else "cell"
    several = len(effects) > 1
    verdict = effects["verdict_holm"] if several else effects["verdict"]
    parts = []
    beyond = effects[verdict == BEYOND]
    for _, r in beyond.iterrows():
        what = f"{r[name]} ({r['change']})" if name == "factor" else r[name]
        direction = "raised" if r["effect"] > 0 else "lowered"
        parts.append(f"**{what}** {direction} {metric_name} by {abs(100 * r['effect']):.1f} "
                     f"points (95 % CI {100 * r['ci_low']:+.1f} to {100 * r['ci_high']:+.1f}).")
    lead = effects[(verdict == WITHIN) & (effects["verdict"] == BEYOND)] if several else \
        effects.iloc[0:0]
    if len(lead):
        names = ", ".join(str(r[name]) for _, r in lead.iterrows())
        parts.append(f"Beyond noise on its own interval but not after Holm's adjustment for "
                     f"{len(effects)} effects (a lead, not a finding): {names}.")
    within = effects[(verdict == WITHIN) & (effects["verdict"] != BEYOND)]
    if len(within):
        names = ", ".join(str(r[name]) for _, r in within.iterrows())
        parts.append(f"Within noise (the 95 % interval includes zero): {names}.")
    unknown = effects[verdict.isin([TOO_FEW, NO_SPREAD])]
    if len(unknown):
        names = ", ".join(str(r[name]) for _, r in unknown.iterrows())
        parts.append(f"Too few seeds, or no spread between them, to tell: {names}.")
    if beyond.empty:
        parts.insert(0, "Nothing moved the result beyond seed-to-seed noise.")
    if several:
        parts.append(f"Verdicts are Holm-adjusted for {len(effects)} effects at 5 %.")
    return " ".join(parts)


# --- as people read it --------------------------------------------------------------------------
def pp_interval(value: float, low: float, high: float) -> str:
    """`-2.1 pp [-3.0, -1.2]`, or `–` when there is no value."""
    if pd.isna(value):
        return "–"
    out = f"{100 * value:+.1f} pp"
    if not pd.isna(low):
        out += f" [{100 * low:+.1f}, {100 * high:+.1f}]"
    return out


def mean_std(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{100 * mean:.1f} ± {100 * std:.1f} %" if not pd.isna(std) else f"{100 * mean:.1f} %"


def readable_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The cell summary as people read it: `71.2 ± 0.8 % [70.1, 72.3]` per metric, and the
    difference to the base cell when it is there."""
    def text(row, metric):
        out = mean_std(row[f"{metric}_mean"], row[f"{metric}_std"])
        if not pd.isna(row[f"{metric}_ci_low"]):
            out += f" [{100 * row[f'{metric}_ci_low']:.1f}, {100 * row[f'{metric}_ci_high']:.1f}]"
        return out

    columns: dict[str, object] = {"cell": summary["cell"], "runs": summary["runs"],
                                  "seeds": summary["n"]}
    columns.update({name: [text(r, m) for _, r in summary.iterrows()]
                    for m, name in METRICS.items()})
    if "delta" in summary:
        columns["Δ vs base (95 % CI)"] = [
            "base" if r.get("is_base") else pp_interval(r["delta"], r["delta_ci_low"],
                                                        r["delta_ci_high"])
            for _, r in summary.iterrows()]
    return pd.DataFrame(columns)


def readable_effects(effects: pd.DataFrame) -> pd.DataFrame:
    """Effects in percentage points with their interval, e.g. `-2.1 pp [-3.0, -1.2]`, the raw
    and (with several effects) Holm-adjusted verdicts, and the seeds a target needs."""
    name = "factor" if "factor" in effects else "cell"
    columns: dict[str, object] = {name: effects[name]}
    if "change" in effects:
        columns["change"] = effects["change"]
    columns["effect (95 % CI)"] = [pp_interval(r["effect"], r["ci_low"], r["ci_high"])
                                   for _, r in effects.iterrows()]
    columns["seeds"] = effects["n"]
    columns["paired by seed"] = effects["paired"].map({True: "yes", False: "no (Welch)"})
    columns["p"] = [f"{p:.3g}" if not pd.isna(p) else "–" for p in effects["p"]]
    columns["verdict"] = effects["verdict"]
    if len(effects) > 1 and "p_holm" in effects:
        columns["p (Holm)"] = [f"{p:.3g}" if not pd.isna(p) else "–" for p in effects["p_holm"]]
        columns["verdict (Holm)"] = effects["verdict_holm"]
    if "seeds_needed" in effects:
        columns["seeds needed"] = [f"{v:.0f}" if not pd.isna(v) else "–"
                                   for v in effects["seeds_needed"]]
    return pd.DataFrame(columns)
