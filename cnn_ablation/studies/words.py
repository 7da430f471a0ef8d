"""A study's numbers as people read them: the verdict in a sentence, intervals in percentage
points, per-cell and per-effect tables with readable columns, the provisional note."""

from __future__ import annotations

import math

import pandas as pd

from cnn_ablation.config import METRICS
from cnn_ablation.studies.estimators import (
    BEYOND,
    INCONCLUSIVE,
    NO_CHANGE,
    NO_VALUES,
    TOO_FEW,
    WITHIN,
)


# --- words --------------------------------------------------------------------------------------
def provisional_text(done: int, total: int) -> str:
    return (f"Provisional: {done} of {total} runs. No verdict until every cell has all its "
            "seeds; the numbers below can still move.")


def judged_rows(result: dict) -> list[dict]:
    """Every statement the study makes with a verdict, one Holm family: the effects, the
    interactions, and (in a factorial design with named cells) those cells against the base.
    Each row has `what` (how the sentence names it) beside the effect's columns."""
    rows = []
    for r in result["effects"].to_dict("records"):
        what = f"{r['factor']} ({r['change']})" if "factor" in r else str(r["cell"])
        rows.append({**r, "what": what, "short": str(r.get("factor", r.get("cell")))})
    for r in result["interactions"].to_dict("records"):
        pair = f"{r['factor_1']} × {r['factor_2']}"
        rows.append({**r, "what": f"{pair} (interaction)", "short": f"{pair} (interaction)"})
    if result["effects_kind"] == "main effects":
        for r in result["summary"].to_dict("records"):
            if isinstance(r.get("delta_verdict"), str) and r["delta_verdict"]:
                rows.append({"what": f"{r['cell']} vs the base",
                             "short": f"{r['cell']} vs the base", "effect": r["delta"],
                             "ci_low": r["delta_ci_low"], "ci_high": r["delta_ci_high"],
                             "sd": r["delta_sd"], "verdict": r["delta_verdict"],
                             "verdict_holm": r["delta_verdict_holm"]})
    return rows


def machine_words(completed: pd.DataFrame | None) -> list[str]:
    """A warning when the completed runs trained on more than one Keras backend or kind of
    device: numerics differ between them (kernels, reduction order, float modes), so a
    difference between cells that ran on different ones is confounded with that."""
    if completed is None or not len(completed):
        return []
    found = []
    for column, what in (("backend", "Keras backends"), ("device_kind", "kinds of device")):
        if column not in completed:
            continue
        counts = completed[column].dropna().value_counts()
        if len(counts) > 1:
            found.append(f"{what} ({', '.join(f'{k}: {n}' for k, n in sorted(counts.items()))})")
    if not found:
        return []
    return [f"**Mixed machines:** this study's runs trained on different {' and '.join(found)}. "
            "Those compute differently, so a difference between cells may come from where they "
            "ran rather than from the switch: re-run the cells on one backend and one kind of "
            "device before trusting an effect."]


def plain_words(result: dict, done: int | None = None, total: int | None = None) -> str:
    """What mattered beyond noise and what did not, in sentences; only for a complete study
    (`done` == `total`): otherwise only that it is provisional. Every verdict is Holm's over the
    one family of everything judged (`judged_rows`)."""
    mixed = machine_words(result.get("completed"))
    if done is not None and total is not None and done < total:
        return " ".join([*mixed, provisional_text(done, total)])
    metric = result["metric"]
    metric_name = METRICS[metric]
    parts = list(mixed)
    if result.get("primary") and metric != result["primary"]:
        parts.append(f"Exploratory: {metric_name} is not this study's primary metric "
                     f"({METRICS[result['primary']]}, fixed when it was created); read these "
                     "verdicts as leads.")
    parts += diverged_words(result["summary"])
    rows = judged_rows(result)
    if not rows:
        return " ".join([*parts, "No effects: the study has no cells to compare."])
    if all(pd.isna(r["effect"]) for r in rows):
        completed = result.get("completed")
        if completed is not None and len(completed) and completed[metric].notna().any():
            summary = result["summary"]
            empty = summary[summary[f"{metric}_mean"].isna()]["cell"].tolist()
            return " ".join([*parts, "No verdict: every effect compares cells that all need "
                                     f"values, and these have none for {metric_name}: "
                                     f"{', '.join(map(str, empty))}."])
        hint = (" (validation accuracy needs a validation split; test accuracy is there for "
                "every completed run)") if "val" in metric else ""
        return " ".join([*parts, f"No verdict: no completed run has a value for {metric_name}"
                                 f"{hint}."])
    smallest = result.get("smallest_pp", math.nan)
    several = len(rows) > 1
    verdict = "verdict_holm" if several else "verdict"
    found = []
    for r in rows:
        if r[verdict] != BEYOND:
            continue
        direction = "raised" if r["effect"] > 0 else "lowered"
        exact = " in every seed alike" if r.get("sd") == 0 else \
            f" (95 % CI {100 * r['ci_low']:+.1f} to {100 * r['ci_high']:+.1f})"
        changed = "changed the effect by" if "interaction" in r["what"] else \
            f"{direction} {metric_name} by"
        found.append(f"**{r['what']}** {changed} {abs(100 * r['effect']):.1f} points{exact}.")
    if not found:
        parts.append("Nothing moved the result beyond seed-to-seed noise.")
    parts += found
    # the lists name each statement briefly (a factor, a cell, a pair); the sentences above
    # say what changed
    named = {
        "lead": [r["short"] for r in rows if several and r["verdict"] == BEYOND
                 and r[verdict] != BEYOND],
        WITHIN: [r["short"] for r in rows if r[verdict] == WITHIN and r["verdict"] != BEYOND],
        INCONCLUSIVE: [r["short"] for r in rows if r[verdict] == INCONCLUSIVE
                       and r["verdict"] != BEYOND],
        NO_CHANGE: [r["short"] for r in rows if r[verdict] == NO_CHANGE],
        "unknown": [r["short"] for r in rows if r[verdict] in (TOO_FEW, NO_VALUES)],
    }
    lines = {
        "lead": f"Its own interval excludes zero, but not after Holm's adjustment for "
                f"{len(rows)} verdicts (a lead, not a finding): ",
        WITHIN: f"Within noise (the 95 % interval holds zero and stays inside ±{smallest:g} pp, "
                "the smallest change that matters): ",
        INCONCLUSIVE: f"Inconclusive (the 95 % interval holds zero but reaches past "
                      f"±{smallest:g} pp: an effect that matters is not ruled out): ",
        NO_CHANGE: "No change in any seed: ",
        "unknown": "Too few seeds, or no values, to tell: ",
    }
    for key, names in named.items():
        if names:
            parts.append(lines[key] + ", ".join(names) + ".")
    if several:
        parts.append(f"Verdicts are Holm-adjusted at 5 % over all {len(rows)} of them (one "
                     "family: the chance of any false \"beyond noise\" stays at 5 %).")
    return " ".join(parts)


def diverged_words(summary: pd.DataFrame) -> list[str]:
    """`conv_1 off diverged in 2 of 5 seeds (counted as an outcome; its mean is over the
    others).`, per cell that had a diverged seed."""
    out: list[str] = []
    if "diverged" not in summary:
        return out
    for r in summary.to_dict("records"):
        if r["diverged"] and not r["n"]:
            out.append(f"{r['cell']} diverged in all {r['diverged']} of its seeds (an outcome, "
                       "not a missing run; it has no value to compare).")
        elif r["diverged"]:
            seeds = int(r["n"]) + int(r["diverged"])
            out.append(f"{r['cell']} diverged in {r['diverged']} of {seeds} seeds (an outcome, "
                       "not a missing run; its mean is over the seeds that did not).")
    return out


# --- as people read it --------------------------------------------------------------------------
def few_seeds(n: object) -> str:
    """A note on an interval from 2 seeds: valid, but its t quantile (12.7, one degree of
    freedom) makes it about 3 times as wide as with 3 seeds (4.3), so it reads like an error."""
    try:
        return " (2 seeds: wide)" if int(n) == 2 else ""  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return ""


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
            if row.get(f"{metric}_clipped"):
                out += " (cut at 0–100 %)"
            if row[f"{metric}_ci_high"] > row[f"{metric}_ci_low"]:  # a point needs no note
                out += few_seeds(row.get("n"))
        return out

    columns: dict[str, object] = {"cell": summary["cell"], "runs": summary["runs"],
                                  "seeds": summary["n"]}
    if "diverged" in summary and summary["diverged"].any():
        columns["diverged"] = [f"{d} of {n + d} seeds" if d else "–"
                               for d, n in zip(summary["diverged"], summary["n"], strict=True)]
    columns.update({name: [text(r, m) for _, r in summary.iterrows()]
                    for m, name in METRICS.items()})
    if "delta" in summary:
        columns["Δ vs base (95 % CI)"] = [
            "base" if r.get("is_base") else pp_interval(r["delta"], r["delta_ci_low"],
                                                        r["delta_ci_high"])
            for _, r in summary.iterrows()]
    return pd.DataFrame(columns)


def readable_effects(effects: pd.DataFrame) -> pd.DataFrame:
    """Effects in percentage points with their interval, e.g. `-2.1 pp [-3.0, -1.2]`, raw and
    Holm-adjusted p, the verdict (Holm's), and the seeds a target needs."""
    name = "factor" if "factor" in effects else "cell"
    columns: dict[str, object] = {name: effects[name]}
    if "change" in effects:
        columns["change"] = effects["change"]
    columns["effect (95 % CI)"] = [pp_interval(r["effect"], r["ci_low"], r["ci_high"])
                                   + (few_seeds(r["n"]) if r["ci_high"] > r["ci_low"] else "")
                                   for _, r in effects.iterrows()]
    columns["seeds"] = effects["n"]
    columns["paired by seed"] = effects["paired"].map({True: "yes", False: "no (Welch)"})
    columns["p"] = [f"{p:.3g}" if not pd.isna(p) else "–" for p in effects["p"]]
    # One verdict, Holm's over the study's family: a column of raw verdicts would say "beyond
    # noise" for chance hits in more than 5 % of studies with no effect at all
    if "p_holm" in effects:
        columns["p (Holm)"] = [f"{p:.3g}" if not pd.isna(p) else "–" for p in effects["p_holm"]]
    columns["verdict"] = effects["verdict_holm"] if "verdict_holm" in effects else \
        effects["verdict"]
    if "seeds_needed" in effects:
        columns["seeds needed"] = [f"{v:.0f}" if not pd.isna(v) else "–"
                                   for v in effects["seeds_needed"]]
    return pd.DataFrame(columns)


REPEATS_NOTE = ("Repeats of one (cell, seed), the same config and seed run more than once, are "
                "averaged first: the seed, not the run, is the unit of replication.")


def summary_note(result: dict) -> str:
    """What the per-cell table's numbers are."""
    out = ("mean ± standard deviation over seeds [95 % confidence interval of the mean, cut at "
           f"0–100 % where the t interval reaches past it]; Δ vs base ({result['base_cell']}) "
           "in percentage points, paired by seed.")
    if result["effects_kind"] == "main effects":
        out += (" In a factorial design the main effects and interactions carry the verdicts; "
                "a design cell's Δ vs base is a number, not a verdict.")
    return out + " " + REPEATS_NOTE


def effects_note(result: dict) -> str:
    """How the effects' intervals and verdicts are made."""
    out = "Intervals are t intervals over seeds, paired by seed (Welch's where seeds do not pair)."
    if result.get("stein", 0) > 1 and result.get("done", 1) > 0:
        out += (f" Adaptive seeds: paired intervals use the spread of the round the plan was made "
                f"from ({result['stein']} seeds, {result['stein'] - 1} degrees of freedom; Stein's "
                "two-stage rule), so their 95 % holds whatever that spread happened to be; an "
                "interval whose first-round seeds do not all pair is the ordinary one.")
    n = len(judged_rows(result))
    if n > 1:
        out += (f" Holm's adjustment runs once over all {n} verdicts the study states (effects, "
                "interactions, named cells vs the base): the chance of any false \"beyond "
                "noise\" is at most 5 %. The verdict in words uses it.")
    out += (f" Within noise: the interval holds zero and stays inside ±{result['smallest_pp']:g}"
            " pp (the smallest change that matters); inconclusive: it reaches past that.")
    return out


def status_line(result: dict) -> str:
    """`complete: 8 of 8 runs` or `provisional: 3 of 8 runs`."""
    state = "complete" if result["complete"] else "provisional"
    return f"{state}: {result['done']} of {result['total']} runs"


def power_text(result: dict) -> str:
    needed = result["seeds_needed"]
    if math.isnan(needed):
        return (f"Seeds per cell to detect {result['power_pp']:g} pp with 80 % power: not known "
                "yet (needs at least 2 seeds per cell).")
    return (f"To detect a change of {result['power_pp']:g} pp with 80 % power (two-sided, 5 % "
            f"each), every statement the study judges (effects, interactions, named cells) needs "
            f"at most {needed:.0f} seeds per cell, judging by the seed-to-seed spread seen so far "
            "(exact power of the paired t-test; per effect in the table). Holm's adjustment over "
            "several statements asks for somewhat more.")


def interaction_text(row: dict) -> str:
    """One interaction in a sentence; the verdict is Holm's over the study's one family."""
    p = row.get("p_holm")
    holm = f" (Holm p {p:.3g})" if p is not None and not pd.isna(p) else ""
    return (f"{row['factor_1']} × {row['factor_2']}: the effect of {row['factor_2']} changes by "
            f"{pp_interval(row['effect'], row['ci_low'], row['ci_high'])} when "
            f"{row['factor_1']} changes; {row['verdict_holm']}{holm}")
