"""Several effects at once: their verdicts ("beyond noise" or not), Holm-adjusted p-values
(statsmodels), seeds per cell needed to detect an effect with 80 % power, and the intervals'
half-widths that the adaptive rule judges."""

from __future__ import annotations

import gc
import math

import numpy as np
import pandas as pd
from scipy import stats  # type: ignore[import-untyped]

from cnn_ablation.studies.estimators import ALPHA, BEYOND, POWER, PROVISIONAL, WITHIN, verdict_of


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
