"""Verdicts over one Holm family (every statement a study makes: "beyond noise", "within noise",
"inconclusive", ...), Holm-adjusted p-values (statsmodels), the seeds per cell needed to detect a
change with 80 % power, and the intervals' half-widths that the adaptive rule judges."""

from __future__ import annotations

import gc
import math

import pandas as pd

from cnn_ablation.studies.estimators import (
    ALPHA,
    BEYOND,
    INCONCLUSIVE,
    POWER,
    PROVISIONAL,
    verdict_of,
)


# --- several effects, verdicts, power -----------------------------------------------------------
def judge(parts: list[pd.DataFrame], complete: bool = True,
          smallest: float = math.nan) -> list[pd.DataFrame]:
    """Verdicts over one family: every row of every part with a verdict shown (column `judged`,
    True where absent) is one hypothesis, and Holm's adjustment runs once over all of them
    (`p_holm`, `verdict_holm`), so the chance of any false "beyond noise" among everything the
    study states stays at 5 %. `verdict`: each interval on its own; `smallest`: the smallest
    effect that matters (a fraction), past which an interval holding zero is "inconclusive".
    Rows not judged keep their interval and get no verdict (""). While the study is incomplete
    every verdict reads "provisional": numbers may be shown, judgements not."""
    outs = []
    for part in parts:
        out = part.copy()
        if "judged" not in out:
            out["judged"] = True
        out["judged"] = out["judged"].astype(bool)
        out["verdict"] = [verdict_of(e, lo, hi, sd, smallest, p) if j else ""
                          for e, lo, hi, sd, p, j in zip(out["effect"], out["ci_low"],
                                                         out["ci_high"], out["sd"], out["p"],
                                                         out["judged"], strict=True)]
        outs.append(out)
    pvalues = [p for out in outs for p, judged in zip(out["p"], out["judged"], strict=True)
               if judged]
    adjusted = iter(holm(pvalues))
    for out in outs:
        out["p_holm"] = [next(adjusted) if judged else math.nan for judged in out["judged"]]
        out["verdict_holm"] = [_after_holm(p, v, j) for p, v, j in zip(
            out["p_holm"], out["verdict"], out["judged"], strict=True)]
        if not complete:
            out["verdict"] = [PROVISIONAL if j else "" for j in out["judged"]]
            out["verdict_holm"] = out["verdict"]
    return outs


def _after_holm(p_holm: float, verdict: str, judged: bool) -> str:
    if not judged:
        return ""
    if pd.isna(p_holm) or verdict != BEYOND:
        return verdict  # no p (too few seeds, no values) or not beyond on its own
    return BEYOND if p_holm < ALPHA else INCONCLUSIVE  # a lead, not a finding


def with_verdicts(effects: pd.DataFrame, complete: bool = True,
                  smallest: float = math.nan) -> pd.DataFrame:
    """`judge` over one frame: its effects are the whole family."""
    return judge([effects], complete, smallest)[0]


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
    80 % power when one seed's difference varies by `sd`: the least whole number whose exact
    power reaches 80 %. At least 2. NaN when the spread is unknown."""
    from scipy import stats  # type: ignore[import-untyped]  # on first use: 0.5 s to import
    if pd.isna(sd) or not target > 0:
        return math.nan
    if sd == 0:
        return 2.0
    effect_size = target / sd
    # A first guess from the normal approximation, then the exact power (scipy's noncentral t)
    # at whole seed counts, stepping to the least count that reaches 80 %. (statsmodels'
    # solver, used before, returned 2.00002 at its lower bound where 2 seeds give power 0.47.)
    z = float(stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER))
    seeds = max(2, min(10_000, math.ceil((z / effect_size) ** 2)))
    if _paired_power(effect_size, seeds) >= POWER:
        while seeds > 2 and _paired_power(effect_size, seeds - 1) >= POWER:
            seeds -= 1
        return float(seeds)
    for more in range(seeds + 1, 10_001):
        if _paired_power(effect_size, more) >= POWER:
            return float(more)
    return math.nan


def _paired_power(effect_size: float, n: int) -> float:
    """Power of the two-sided one-sample t-test with `n` values: the noncentral t's tails
    beyond the critical values (scipy). Where scipy's noncentral t gives no number (large
    effect sizes), by integrating over the chi-square part of the t statistic instead."""
    from scipy import stats  # on first use: 0.5 s to import
    df = n - 1
    crit = float(stats.t.ppf(1 - ALPHA / 2, df))
    shift = effect_size * math.sqrt(n)
    power = float(stats.nct.sf(crit, df, shift) + stats.nct.cdf(-crit, df, shift))
    if math.isfinite(power) and 0 <= power <= 1:
        return power
    from scipy import integrate

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
