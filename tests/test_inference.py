"""What a study's verdicts promise, checked by simulation through the code the page runs
(`studies.results.analyse`, the adaptive rule's `studies.rounds.decide`), on noisy simulated
studies with a known truth:

- adaptive seeds (Stein's two-stage rule) keep the 95 % interval's coverage at >= 94 % over 2,000
  studies (the old rule, stopping on a lucky small spread, covered 91.7 %: this test fails it);
- with no true effect, the chance that a 2x2 or a 2x2x2 study states any "beyond noise" (main
  effects, interactions, cells vs the base: one Holm family) stays at 5 % over 2,000 studies each
  (the three separate families before gave 12.4 % and 21.1 %);
- the power hint is the least seed count whose power (statsmodels' TTestPower) reaches 80 %, on a
  200-point grid, the solver's lower bound included;
- the small rules: no verdict without values, an exact shift, intervals cut at 0-100 %, duplicate
  cell names refused, diverged seeds counted, the primary metric fixed at creation, "inconclusive"
  past the smallest change that matters.

The simulations run in two processes (a 2-core machine does them in about a minute each); their
random numbers are seeded, so each result is the same on every run."""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from cnn_ablation.config import ConfigError, RunConfig
from cnn_ablation.studies import inference, rounds
from cnn_ablation.studies.adaptive_rule import AdaptiveRule
from cnn_ablation.studies.estimators import BEYOND
from cnn_ablation.studies.results import analyse
from cnn_ablation.studies.spec import StudySpec

BASE = RunConfig(dataset="synthetic:100", epochs=1, batch_size=16)
METRIC = "final_val_accuracy"
STUDIES = 2000


def runs_frame(spec: StudySpec, value, seeds, status=lambda cell, seed: "completed"):
    """One completed run per (cell, seed) with `value(cell, seed)` as every metric."""
    rows = []
    for cell in spec.cells():
        for seed in seeds:
            v = value(cell, seed)
            rows.append({"cell": cell.label, "seed": seed, "status": status(cell, seed),
                         **cell.levels, METRIC: v, "best_val_accuracy": v, "test_accuracy": v})
    return pd.DataFrame(rows)


def in_parallel(func, chunks):
    with ProcessPoolExecutor(2) as pool:
        return list(pool.map(func, chunks))


# --- adaptive seeds keep their coverage -------------------------------------------------------
TRUE_EFFECT = -0.02


def adaptive_chunk(seed: int, n: int = STUDIES // 4) -> tuple[int, int, list[int]]:
    """`n` one-effect adaptive studies (3 first seeds, 2 more per round, ±1 pp, at most 20);
    the spread of a seed's difference varies between studies so the plans differ. Returns
    (studies whose final interval holds the true effect, studies, seeds per cell used)."""
    rng = np.random.default_rng(seed)
    start = StudySpec(BASE, {"bn_conv_2": (True, False)}, "ofat", seeds=3,
                      adaptive=AdaptiveRule(half_width=0.01, max_seeds=20, step=2))
    covered, used = 0, []
    for _ in range(n):
        run_sd = rng.choice([0.002, 0.004, 0.006])
        shift = rng.normal(0, 0.01, 20)
        noise = {(c.label, s): rng.normal(0, run_sd) for c in start.cells() for s in range(20)}

        def value(cell, s, shift=shift, noise=noise):
            return 0.8 + shift[s] + noise[(cell.label, s)] + (TRUE_EFFECT if cell.label != "base"
                                                              else 0.0)

        spec, seeds = start, 3
        while True:
            result = analyse(spec, runs_frame(spec, value, range(seeds)), METRIC, True)
            rule, more = rounds.decide(spec.adaptive, seeds, result)
            spec = replace(spec, adaptive=rule)
            if rule.stopped:
                break
            spec, seeds = spec.with_seeds(more), more
        row = result["effects"].iloc[0]
        covered += bool(row["ci_low"] <= TRUE_EFFECT <= row["ci_high"])
        used.append(seeds)
    return covered, n, used


@pytest.mark.slow
def test_adaptive_seeds_cover_the_true_effect_in_at_least_94_percent_of_2000_studies():
    parts = in_parallel(adaptive_chunk, [101, 102, 103, 104])
    covered = sum(c for c, _, _ in parts)
    studies = sum(n for _, n, _ in parts)
    used = [s for _, _, u in parts for s in u]
    assert studies >= 2000
    assert covered / studies >= 0.94, (covered, studies)
    # the rule did adapt: some studies stopped after round 1, others needed more seeds
    assert min(used) == 3 and max(used) > 9, (min(used), max(used))


def test_stein_plans_from_the_first_round_and_its_interval_uses_that_spread():
    """The plan: n = max(first, ceil((t(first-1) * s / W)^2)), capped; the interval after it:
    mean of all n ± t(first-1) * s_first / sqrt(n), both computed here with scipy."""
    rule = AdaptiveRule(half_width=0.01, max_seeds=30)
    t2, t1 = stats.t.ppf(0.975, 2), stats.t.ppf(0.975, 1)
    assert rule.plan(3, [(0.004, 3), (0.008, 3)]) == math.ceil((t2 * 0.008 / 0.01) ** 2)
    assert rule.plan(3, [(0.001, 3)]) == 3 and rule.plan(3, [(0.0, 3)]) == 3
    assert rule.plan(3, [(0.05, 3)]) == 30 and rule.plan(3, [(math.nan, 3)]) == 30
    # a difference with only 2 pairs (a first-round seed diverged) plans with t(1), its own df
    assert rule.plan(3, [(0.002, 3), (0.002, 2)]) == math.ceil((t1 * 0.002 / 0.01) ** 2)
    from cnn_ablation.studies.estimators import paired_difference

    diffs = [0.01, -0.004, 0.02, 0.006, 0.011, -0.002, 0.009]
    est = paired_difference(diffs, first=3)
    se = np.std(diffs[:3], ddof=1) / math.sqrt(7)
    assert est.value == pytest.approx(np.mean(diffs))
    assert (est.low, est.high) == pytest.approx((np.mean(diffs) - t2 * se,
                                                 np.mean(diffs) + t2 * se), rel=1e-12)
    assert est.p == pytest.approx(2 * stats.t.sf(abs(np.mean(diffs)) / se, 2), rel=1e-12)


def test_a_study_with_no_values_stops_at_once_instead_of_running_to_its_limit():
    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "ofat", seeds=3,
                     adaptive=AdaptiveRule(half_width=0.01, max_seeds=20))
    runs = runs_frame(spec, lambda cell, s: math.nan, range(3))
    result = analyse(spec, runs, METRIC, True)
    rule, _ = rounds.decide(spec.adaptive, 3, result)
    assert rule.stopped.startswith("no values of final val acc in round 1")
    assert result["words"].startswith("No verdict: no completed run has a value for final val "
                                      "acc (validation accuracy needs a validation split")
    assert "Nothing moved" not in result["words"]


# --- one Holm family: false "beyond noise" at 5 % ---------------------------------------------
DESIGNS = {"2x2": {"bn_conv_2": (True, False), "dropout": (0.5, 0.0)},
           "2x2x2": {"bn_conv_2": (True, False), "bn_conv_3": (True, False),
                     "dropout": (0.5, 0.0)}}


def null_chunk(args: tuple[str, int, int]) -> tuple[int, int]:
    """(studies stating some "beyond noise", studies) over `n` studies of `design` with no true
    effect: a shift per seed shared by every cell, noise per run, 5 seeds."""
    design, seed, n = args
    rng = np.random.default_rng(seed)
    spec = StudySpec(BASE, DESIGNS[design], "full", seeds=5)
    hits = 0
    for _ in range(n):
        shift = rng.normal(0, 0.01, 5)
        runs = runs_frame(spec, lambda cell, s, shift=shift: 0.8 + shift[s]
                          + rng.normal(0, 0.006), range(5))
        result = analyse(spec, runs, METRIC, True)
        stated = [*result["effects"]["verdict_holm"], *result["interactions"]["verdict_holm"],
                  *result["summary"]["delta_verdict_holm"].dropna()]
        hits += BEYOND in stated or "raised" in result["words"] or "lowered" in result["words"]
    return hits, n


@pytest.mark.slow
@pytest.mark.parametrize("design", list(DESIGNS))
def test_with_no_true_effect_a_study_states_some_beyond_noise_in_at_most_5_percent(design):
    parts = in_parallel(null_chunk, [(design, 200 + i, STUDIES // 4) for i in range(4)])
    hits, studies = sum(h for h, _ in parts), sum(n for _, n in parts)
    assert studies >= 2000
    # at most 5 % plus simulation error: a one-sided binomial test against 5 % does not reject
    # at 1 % (a 7 % rule over 2,000 studies fails this with probability > 0.99)
    assert stats.binomtest(hits, studies, 0.05, alternative="greater").pvalue > 0.01, \
        (hits, studies)


# --- the power hint -------------------------------------------------------------------------
def reference_power(effect_size: float, n: int) -> float:
    """Power of the two-sided one-sample t-test at 5 %: statsmodels' TTestPower where it gives a
    number; where its noncentral t gives NaN (large effect sizes), the same probability
    integrated here over the chi-square part of the t statistic (scipy.integrate)."""
    power = TTestPower().power(effect_size=effect_size, nobs=n, alpha=0.05)
    if np.isfinite(power):
        return float(power)
    from scipy import integrate

    df, shift = n - 1, effect_size * math.sqrt(n)
    crit = stats.t.ppf(0.975, df)
    return integrate.quad(lambda v: (stats.norm.cdf(shift - crit * math.sqrt(v / df))
                                     + stats.norm.cdf(-shift - crit * math.sqrt(v / df)))
                          * stats.chi2.pdf(v, df), 0, np.inf, limit=200)[0]


def test_seeds_needed_is_the_least_count_with_80_percent_power_on_a_200_point_grid():
    wrong = []
    for sd in np.geomspace(0.001, 0.06, 20):
        for target in np.geomspace(0.002, 0.06, 10):
            n = int(inference.seeds_needed(float(sd), float(target)))
            es = target / sd
            enough = reference_power(es, n) >= 0.8
            less = n > 2 and reference_power(es, n - 1) >= 0.8
            if not enough or less:
                wrong.append((sd, target, n))
    assert wrong == []
    # the solver's lower bound: 2 seeds give power 0.47 here, so 2 is not the answer
    assert reference_power(0.056 / 0.01, 2) < 0.5
    assert inference.seeds_needed(0.01, 0.056) == 3


# --- the small rules --------------------------------------------------------------------------
def test_cell_intervals_are_cut_at_0_and_100_percent_and_say_so():
    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "ofat", seeds=2)
    values = {("base", 0): 0.99, ("base", 1): 0.999, ("bn_conv_2=off", 0): 0.5,
              ("bn_conv_2=off", 1): 0.6}
    result = analyse(spec, runs_frame(spec, lambda c, s: values[(c.label, s)], range(2)),
                     METRIC, True)
    base = result["summary"].set_index("cell").loc["base"]
    raw = stats.ttest_1samp([0.99, 0.999], 0).confidence_interval(0.95)
    assert raw.high > 1 and base[f"{METRIC}_ci_high"] == 1.0
    assert base[f"{METRIC}_ci_low"] == pytest.approx(raw.low) and base[f"{METRIC}_clipped"]
    from cnn_ablation.studies.words import readable_summary

    text = readable_summary(result["summary"]).set_index("cell").loc["base", "final val acc"]
    assert text.endswith(", 100.0] (cut at 0–100 %) (2 seeds: wide)")


def test_an_interval_from_two_seeds_says_why_it_is_so_wide_and_three_do_not():
    """"22.0 ± 2.8 % [−3.4, 47.4]" is valid with 2 seeds (t with one degree of freedom is 12.7)
    but reads like a bug; the table says what makes it wide."""
    from cnn_ablation.studies.words import readable_effects, readable_summary

    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "ofat", seeds=3)
    values = {("base", 0): 0.22, ("base", 1): 0.26, ("base", 2): 0.24,
              ("bn_conv_2=off", 0): 0.2, ("bn_conv_2=off", 1): 0.21, ("bn_conv_2=off", 2): 0.25}
    for seeds, note in ((2, True), (3, False)):
        result = analyse(spec, runs_frame(spec, lambda c, s: values[(c.label, s)], range(seeds)),
                         METRIC, True)
        cells = readable_summary(result["summary"])["final val acc"].tolist()
        effects = readable_effects(result["effects"])["effect (95 % CI)"].tolist()
        assert all(("2 seeds: wide" in t) == note for t in cells + effects), (seeds, cells, effects)
        assert not any("[-" in t for t in cells)  # no negative accuracy, whatever the seeds
    same = {key: 0.5 for key in values}  # no spread: a point interval, nothing "wide" about it
    result = analyse(spec, runs_frame(spec, lambda c, s: same[(c.label, s)], range(2)), METRIC,
                     True)
    assert not any("wide" in t for t in readable_summary(result["summary"])["final val acc"])


def test_two_cells_of_one_name_are_refused():
    with pytest.raises(ConfigError, match="cell name: 'all off' is not allowed.*no other cell"):
        StudySpec(BASE, {"bn_conv_2": (True, False)}, "ofat", seeds=2,
                  extra_cells=(("all off", {"bn": [False] * 5}), ("all off", {"dropout": 0.0})))
    with pytest.raises(ConfigError, match="cell name: 'base'"):
        StudySpec(BASE, {"bn_conv_2": (True, False)}, "ofat", seeds=2,
                  extra_cells=(("base", {"dropout": 0.0}),))


def test_diverged_seeds_are_an_outcome_counted_in_the_cell_and_the_words():
    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "ofat", seeds=4)
    rng = np.random.default_rng(5)
    runs = runs_frame(spec, lambda c, s: math.nan if (c.label != "base" and s in (1, 3))
                      else 0.8 + rng.normal(0, 0.01), range(4),
                      status=lambda c, s: "diverged" if c.label != "base" and s in (1, 3)
                      else "completed")
    result = analyse(spec, runs, METRIC, True)
    off = result["summary"].set_index("cell").loc["bn_conv_2=off"]
    assert off["diverged"] == 2 and off["n"] == 2
    assert "bn_conv_2=off diverged in 2 of 4 seeds" in result["words"]
    from cnn_ablation.studies.grid import DONE

    assert "diverged" in DONE  # the study is complete with them, not provisional forever


def test_the_primary_metric_is_fixed_at_creation_and_others_are_exploratory():
    spec = StudySpec(BASE.with_changes(val_split=0.0), {"bn_conv_2": (True, False)}, "ofat",
                     seeds=3)
    assert spec.metric == "test_accuracy"  # no validation split: test accuracy by default
    with pytest.raises(ConfigError, match="metric: 'final_val_accuracy'.*test_accuracy"):
        StudySpec(BASE.with_changes(val_split=0.0), {"bn_conv_2": (True, False)}, "ofat",
                  seeds=3, metric="final_val_accuracy").check_new()
    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "ofat", seeds=3)
    assert spec.metric == "final_val_accuracy"
    runs = runs_frame(spec, lambda c, s: 0.8 + 0.001 * s, range(3))
    other = analyse(spec, runs, "best_val_accuracy", True)
    assert other["words"].startswith("Exploratory: best val acc (optimistic) is not this "
                                     "study's primary metric (final val acc")
    assert not analyse(spec, runs, METRIC, True)["words"].startswith("Exploratory")


def test_an_interval_reaching_past_the_smallest_change_that_matters_is_inconclusive():
    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "ofat", seeds=3, smallest_effect=0.005)
    noisy = {0: 0.0, 1: 0.02, 2: -0.018}
    runs = runs_frame(spec, lambda c, s: 0.8 + (noisy[s] if c.label != "base" else 0), range(3))
    result = analyse(spec, runs, METRIC, True)
    row = result["effects"].iloc[0]
    assert row["ci_low"] < -0.005 and row["ci_high"] > 0.005 and row["verdict"] == "inconclusive"
    assert "Inconclusive (the 95 % interval holds zero but reaches past ±0.5 pp" in \
        result["words"]
    quiet = {0: 0.0, 1: 0.0004, 2: -0.0003}
    runs = runs_frame(spec, lambda c, s: 0.8 + (quiet[s] if c.label != "base" else 0), range(3))
    assert analyse(spec, runs, METRIC, True)["effects"].iloc[0]["verdict"] == "within noise"


def test_a_cell_that_diverged_in_every_seed_is_named_not_blamed_on_the_validation_split():
    spec = StudySpec(BASE, DESIGNS["2x2"], "full", seeds=3)
    dead = "bn_conv_2=off, dropout=0"
    runs = runs_frame(spec, lambda c, s: math.nan if c.label == dead else 0.8 + 0.001 * s,
                      range(3), status=lambda c, s: "diverged" if c.label == dead else "completed")
    result = analyse(spec, runs, METRIC, True)
    assert f"{dead} diverged in all 3 of its seeds" in result["words"]
    assert f"these have none for final val acc: {dead}." in result["words"]
    assert "validation split" not in result["words"]


def test_an_adaptive_study_from_before_steins_rule_plans_from_the_round_it_is_in():
    """A stored rule with history but no plan (the old stop-when-narrow rule): its intervals
    are the ordinary ones until its next decision, which plans from that round's spread and
    uses that round as Stein's first stage from then on."""
    old = AdaptiveRule(half_width=0.01, max_seeds=20, step=2, history=((3, 0.02),))
    assert old.first_seeds(5) == 0
    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "ofat", seeds=5, adaptive=old)
    diffs = [0.015, -0.015, 0.0, 0.008, -0.006]
    runs = runs_frame(spec, lambda c, s: 0.8 + (diffs[s] if c.label != "base" else 0), range(5))
    rule, more = rounds.decide(spec.adaptive, 5, analyse(spec, runs, METRIC, True))
    sd = np.std(diffs, ddof=1)
    planned = math.ceil((stats.t.ppf(0.975, 4) * sd / 0.01) ** 2)
    assert 7 < planned < 20 and rule.first == 5 and rule.planned == planned
    assert not rule.stopped and more == 7
