"""A study's numbers as people read them: the verdict in a sentence, intervals in percentage
points, per-cell and per-effect tables with readable columns, the provisional note."""

from __future__ import annotations

import math

import pandas as pd

from cnn_ablation.config import METRICS
from cnn_ablation.studies.estimators import BEYOND, NO_SPREAD, TOO_FEW, WITHIN


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


REPEATS_NOTE = ("Repeats of one (cell, seed), the same config and seed run more than once, are "
                "averaged first: the seed, not the run, is the unit of replication.")


def status_line(result: dict) -> str:
    """`complete: 8 of 8 runs` or `provisional: 3 of 8 runs`."""
    state = "complete" if result["complete"] else "provisional"
    return f"{state}: {result['done']} of {result['total']} runs"


def power_text(result: dict) -> str:
    needed = result["seeds_needed"]
    if math.isnan(needed):
        return (f"Seeds per cell to detect {result['power_pp']:g} pp with 80 % power: not known "
                "yet (needs at least 2 seeds per cell).")
    return (f"To detect a change of {result['power_pp']:g} pp with 80 % power (two-sided, 5 %), "
            f"every effect needs at most {needed:.0f} seeds per cell, judging by the seed-to-seed "
            "spread seen so far (statsmodels' TTestPower; per effect in the table).")


def interaction_text(row: dict) -> str:
    return (f"{row['factor_1']} × {row['factor_2']}: the effect of {row['factor_2']} changes by "
            f"{pp_interval(row['effect'], row['ci_low'], row['ci_high'])} when "
            f"{row['factor_1']} changes; {row['verdict']}")
