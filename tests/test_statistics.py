"""The statistics of a study against scipy.stats and statsmodels, on simulated studies with real
noise: a shift per seed shared by every cell of that seed (what pairing by seed removes), noise
per run, an interaction, repeats of a (cell, seed), and seeds that do not pair. Every expected
number is computed here, by scipy or statsmodels on the same values, never by the code under
test; and over 400 simulated studies with a known true effect the 95 % interval holds it in
93-97 % of them. Pure NumPy/pandas: nothing trains."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from cnn_ablation.studies import effects as study_effects
from cnn_ablation.studies import estimators, inference
from cnn_ablation.studies import words as study_words

FACTORS = {"bn_conv_2": (True, False), "dropout": (0.5, 0.0)}
REFERENCE = {"bn_conv_2": True, "dropout": 0.5}
# Cell means: BN off costs 3 points, dropout 0 adds 1, and both together add 2 more (interaction).
BN_OFF, DROPOUT_0, BOTH = -0.03, 0.01, 0.02
TRUE_BN_MAIN = BN_OFF + BOTH / 2  # the main effect averages over the other factor's levels
TRUE_DROPOUT_MAIN = DROPOUT_0 + BOTH / 2
METRIC = "final_val_accuracy"


def cell_name(bn: bool, dropout: float) -> str:
    return f"bn_conv_2={'on' if bn else 'off'}, dropout={dropout:g}"


def simulate(rng, seeds=5, seed_sd=0.01, run_sd=0.006, repeats=(), seeds_of=None) -> pd.DataFrame:
    """One row per run of a 2x2 full factorial study. `repeats`: (cell, seed) pairs run twice
    (each repeat with its own run noise); `seeds_of(bn, dropout)`: the seeds a cell has (default
    0..seeds-1 for every cell)."""
    shift = rng.normal(0, seed_sd, size=1000)
    rows = []
    for bn in (True, False):
        for dropout in (0.5, 0.0):
            mean = 0.80 + (0 if bn else BN_OFF) + (DROPOUT_0 if dropout == 0.0 else 0) \
                + (BOTH if not bn and dropout == 0.0 else 0)
            cell = cell_name(bn, dropout)
            for seed in (seeds_of(bn, dropout) if seeds_of else range(seeds)):
                for _ in range(2 if (cell, seed) in repeats else 1):
                    value = mean + shift[seed] + rng.normal(0, run_sd)
                    rows.append({"cell": cell, "seed": seed, "bn_conv_2": bn, "dropout": dropout,
                                 METRIC: value, "best_val_accuracy": value + 0.01,
                                 "test_accuracy": value - 0.01})
    return pd.DataFrame(rows)


def per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """Seed x cell table of the metric, repeats averaged: computed here with pandas alone."""
    return runs.groupby(["seed", "bn_conv_2", "dropout"])[METRIC].mean().unstack(
        ["bn_conv_2", "dropout"])


def effect_row(effects: pd.DataFrame, factor: str) -> pd.Series:
    return effects.set_index("factor").loc[factor]


def as_result(effects: pd.DataFrame, smallest_pp: float = 1.0) -> dict:
    """What `plain_words` reads of a study's results, for effects judged on their own."""
    return {"effects": effects, "interactions": pd.DataFrame(), "summary": pd.DataFrame(),
            "effects_kind": "each cell vs the base", "metric": METRIC, "primary": METRIC,
            "smallest_pp": smallest_pp}


def test_the_hand_written_t_table_is_gone():
    assert not hasattr(estimators, "t975") and not hasattr(estimators, "_T975")


def test_repeats_of_a_cell_and_seed_are_averaged_before_the_cell_interval():
    rng = np.random.default_rng(11)
    runs = simulate(rng, seeds=4, repeats={(cell_name(True, 0.5), 1), (cell_name(True, 0.5), 3)})
    cell = cell_name(True, 0.5)
    summary = estimators.cell_summary(runs, [cell, cell_name(False, 0.0), "empty"]).set_index("cell")
    seed_values = runs[runs["cell"] == cell].groupby("seed")[METRIC].mean()
    ci = stats.ttest_1samp(seed_values, 0.0).confidence_interval(0.95)
    row = summary.loc[cell]
    assert row["runs"] == 6 and row["n"] == 4  # 6 runs, but 4 seeds: the unit of replication
    assert row[f"{METRIC}_mean"] == pytest.approx(seed_values.mean(), abs=1e-12)
    assert row[f"{METRIC}_std"] == pytest.approx(np.std(seed_values, ddof=1), abs=1e-12)
    assert (row[f"{METRIC}_ci_low"], row[f"{METRIC}_ci_high"]) == pytest.approx(
        (ci.low, ci.high), abs=1e-12)
    # counting the repeats as runs would have given a different (narrower) interval
    naive = stats.ttest_1samp(runs[runs["cell"] == cell][METRIC], 0.0).confidence_interval()
    assert naive.high - naive.low < ci.high - ci.low
    assert summary.loc["empty", "n"] == 0 and math.isnan(summary.loc["empty", f"{METRIC}_mean"])


def test_main_effects_are_per_seed_averages_over_the_other_factor_with_a_paired_interval():
    rng = np.random.default_rng(12)
    runs = simulate(rng, seeds=6, repeats={(cell_name(False, 0.0), 2)})
    effects = study_effects.main_effects(runs, FACTORS, REFERENCE, METRIC)
    table = per_seed(runs)
    for factor, off, on in (
            ("bn_conv_2", table[False].mean(axis=1), table[True].mean(axis=1)),
            ("dropout", table.xs(0.0, level="dropout", axis=1).mean(axis=1),
             table.xs(0.5, level="dropout", axis=1).mean(axis=1))):
        expected = stats.ttest_rel(off, on)
        ci = expected.confidence_interval(0.95)
        row = effect_row(effects, factor)
        assert row["effect"] == pytest.approx(np.mean(off - on), abs=1e-12)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-12)
        assert row["p"] == pytest.approx(expected.pvalue, rel=1e-9)
        assert row["n"] == 6 and row["paired"]  # seeds, not groups x seeds
        assert row["sd"] == pytest.approx(np.std(off - on, ddof=1), abs=1e-12)
    assert list(effects["effect"].abs()) == sorted(effects["effect"].abs(), reverse=True)


def test_interaction_is_a_per_seed_difference_of_differences_with_a_paired_interval():
    rng = np.random.default_rng(13)
    runs = simulate(rng, seeds=5)
    table, est = study_effects.interaction(runs, "bn_conv_2", "dropout", FACTORS, REFERENCE, METRIC)
    t = per_seed(runs)
    diffs = (t[(False, 0.0)] - t[(False, 0.5)]) - (t[(True, 0.0)] - t[(True, 0.5)])
    expected = stats.ttest_1samp(diffs, 0.0)
    ci = expected.confidence_interval(0.95)
    assert est.value == pytest.approx(diffs.mean(), abs=1e-12)
    assert (est.low, est.high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert est.p == pytest.approx(expected.pvalue, rel=1e-9) and est.paired and est.n == 5
    assert table.loc["off", "0"] == pytest.approx(t[(False, 0.0)].mean(), abs=1e-12)
    assert table.shape == (2, 2)


def test_cells_whose_seeds_do_not_pair_get_welchs_interval_on_per_seed_means():
    rng = np.random.default_rng(14)
    # BN-on cells ran seeds 0-3 (seed 1 twice for one cell), BN-off cells seeds 10-14
    runs = simulate(rng, repeats={(cell_name(True, 0.5), 1)},
                    seeds_of=lambda bn, _: range(4) if bn else range(10, 15))
    base, other = cell_name(True, 0.5), cell_name(False, 0.5)
    versus = study_effects.versus_base(runs, [base, other], base, METRIC).set_index("cell")
    a = runs[runs["cell"] == base].groupby("seed")[METRIC].mean()
    b = runs[runs["cell"] == other].groupby("seed")[METRIC].mean()
    expected = stats.ttest_ind(b, a, equal_var=False)
    ci = expected.confidence_interval(0.95)
    row = versus.loc[other]
    assert not row["paired"] and row["n"] == 9
    assert row["effect"] == pytest.approx(b.mean() - a.mean(), abs=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert row["p"] == pytest.approx(expected.pvalue, rel=1e-9)

    # A main effect averaged over the other factor, unpaired: Welch-Satterthwaite for the
    # contrast of four independent cell means, with scipy's t quantile.
    effects = study_effects.main_effects(runs, FACTORS, REFERENCE, METRIC)
    groups = [(coef, runs[runs["cell"] == cell_name(bn, d)].groupby("seed")[METRIC].mean())
              for bn, coef in ((True, -0.5), (False, 0.5)) for d in (0.5, 0.0)]
    value = sum(c * g.mean() for c, g in groups)
    parts = [c * c * g.var(ddof=1) / len(g) for c, g in groups]
    df = sum(parts) ** 2 / sum(p * p / (len(g) - 1) for p, (_, g) in zip(parts, groups, strict=True))
    half = stats.t.ppf(0.975, df) * math.sqrt(sum(parts))
    row = effect_row(effects, "bn_conv_2")
    assert not row["paired"]
    assert row["effect"] == pytest.approx(value, abs=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((value - half, value + half), abs=1e-12)
    assert row["p"] == pytest.approx(2 * stats.t.sf(abs(value) / math.sqrt(sum(parts)), df),
                                     rel=1e-9)


def test_welch_with_two_seeds_a_side_uses_the_exact_t_quantile():
    """The old table interpolated linearly in df: at df near 1.5 it was up to 41 % too wide."""
    a, b = [0.70, 0.74], [0.60, 0.61]
    est = estimators.welch_difference(a, b)
    expected = stats.ttest_ind(b, a, equal_var=False)
    assert 1 < expected.df < 2
    ci = expected.confidence_interval(0.95)
    assert (est.low, est.high) == pytest.approx((ci.low, ci.high), abs=1e-12)


def ofat_runs(rng, cells=6, seeds=4) -> tuple[pd.DataFrame, list[str]]:
    """A one-at-a-time study: a base cell and `cells` others, two of which really differ."""
    shift = rng.normal(0, 0.01, size=seeds)
    true = {"base": 0.0, **{f"c{i}": (-0.02 if i < 2 else 0.0) for i in range(cells)}}
    rows = [{"cell": cell, "seed": s, METRIC: 0.8 + delta + shift[s] + rng.normal(0, 0.004)}
            for cell, delta in true.items() for s in range(seeds)]
    return pd.DataFrame(rows), list(true)


def test_several_effects_get_holm_adjusted_verdicts_beside_the_raw_intervals():
    rng = np.random.default_rng(15)
    runs, cells = ofat_runs(rng)
    effects = inference.with_verdicts(study_effects.versus_base(runs, cells, "base", METRIC))
    a = runs[runs["cell"] == "base"].set_index("seed")[METRIC]
    raw = [stats.ttest_rel(runs[runs["cell"] == c].set_index("seed")[METRIC], a).pvalue
           for c in cells[1:]]
    reject, adjusted, _, _ = multipletests(raw, alpha=0.05, method="holm")
    assert effects["p"].tolist() == pytest.approx(raw, rel=1e-9)
    assert effects["p_holm"].tolist() == pytest.approx(list(adjusted), rel=1e-9)
    assert (effects["verdict_holm"] == "beyond noise").tolist() == list(reject)
    assert (effects["verdict"] == "beyond noise").tolist() == [p < 0.05 for p in raw]
    words = study_words.plain_words(as_result(effects))
    assert "Holm-adjusted at 5 % over all 6 of them" in words


def test_a_raw_hit_that_does_not_survive_holm_is_called_a_lead_not_a_finding():
    effects = pd.DataFrame({"cell": ["a", "b", "c"], "effect": [0.02, 0.001, 0.0],
                            "ci_low": [0.001, -0.01, -0.01], "ci_high": [0.039, 0.012, 0.01],
                            "n": [3] * 3, "paired": [True] * 3, "p": [0.04, 0.8, 0.9],
                            "sd": [0.01] * 3})
    effects = inference.with_verdicts(effects)
    assert effects["verdict"].tolist()[0] == "beyond noise"
    assert effects["verdict_holm"].tolist()[0] == "inconclusive"  # 3 x 0.04 > 0.05: a lead
    words = study_words.plain_words(as_result(effects))
    assert "raised" not in words and "a lead, not a finding): a." in words
    assert words.startswith("Nothing moved the result beyond seed-to-seed noise.")


def test_seeds_needed_for_x_points_match_statsmodels_power_on_the_seed_to_seed_spread():
    rng = np.random.default_rng(16)
    runs = simulate(rng, seeds=6)
    effects = inference.with_power(study_effects.main_effects(runs, FACTORS, REFERENCE, METRIC), 0.01)
    table = per_seed(runs)
    diffs = table[False].mean(axis=1) - table[True].mean(axis=1)
    sd = np.std(diffs, ddof=1)
    for target in (0.01, 0.005):
        n = TTestPower().solve_power(effect_size=target / sd, alpha=0.05, power=0.8,
                                     alternative="two-sided")
        assert inference.seeds_needed(sd, target) == max(2, math.ceil(n))
    n = TTestPower().solve_power(effect_size=0.01 / sd, alpha=0.05, power=0.8)
    assert effect_row(effects, "bn_conv_2")["seeds_needed"] == max(2, math.ceil(n))
    assert math.isnan(inference.seeds_needed(math.nan, 0.01))


def test_no_verdict_and_no_sentence_about_what_mattered_while_runs_are_missing():
    rng = np.random.default_rng(17)
    runs = simulate(rng, seeds=5)
    effects = inference.with_verdicts(study_effects.main_effects(runs, FACTORS, REFERENCE, METRIC),
                                     complete=False)
    assert set(effects["verdict"]) == {"provisional"} == set(effects["verdict_holm"])
    words = study_words.plain_words(as_result(effects), done=17, total=20)
    assert words.startswith("Provisional: 17 of 20 runs.")
    for claim in ("beyond noise", "within noise", "raised", "lowered", "mattered", "Nothing"):
        assert claim not in words


def test_an_exact_shift_in_every_seed_is_judged_by_its_exact_p_and_no_change_is_said_as_such():
    """Every seed moved by exactly -10 pp: no t interval exists, and accuracies move in steps, so
    equal moves happen by chance. The exact sign-flip p of n equal-signed differences is
    2^(1-n) (scipy's binomial test gives the same): 3 seeds cannot tell (0.25), 7 can (0.016,
    and 0.031 after Holm's adjustment for the two statements below).
    It used to read "Nothing moved the result beyond seed-to-seed noise" (and then p 0)."""
    few = estimators.paired_difference([-0.1] * 3)
    many = estimators.paired_difference([-0.1] * 7)
    for est, n in ((few, 3), (many, 7)):
        assert est.p == pytest.approx(stats.binomtest(n, n, 0.5).pvalue)
        assert est.low == est.high == pytest.approx(-0.1) and est.sd == 0
    assert few.verdict == "too few seeds to tell" and many.verdict == "beyond noise"
    same = estimators.paired_difference([0.0, 0.0, 0.0])
    assert same.verdict == "no change in any seed" and same.p == 1
    effects = inference.with_verdicts(pd.DataFrame([{"cell": "conv_1 off", **many.row()},
                                                     {"cell": "dropout 0", **same.row()}]))
    words = study_words.plain_words(as_result(effects))
    assert "**conv_1 off** lowered final val acc by 10.0 points in every seed alike." in words
    assert "No change in any seed: dropout 0." in words and "Nothing moved" not in words


@pytest.mark.parametrize("design", ["paired main effect", "unpaired cells"])
def test_the_95_percent_interval_holds_the_true_effect_in_93_to_97_percent_of_studies(design):
    rng = np.random.default_rng(2024 if design == "paired main effect" else 7)
    hits, studies = 0, 400
    for _ in range(studies):
        if design == "paired main effect":
            runs = simulate(rng, seeds=4, seed_sd=0.01, run_sd=0.006,
                            repeats={(cell_name(False, 0.0), 1)})
            row = effect_row(study_effects.main_effects(runs, FACTORS, REFERENCE, METRIC), "bn_conv_2")
            true = TRUE_BN_MAIN
        else:
            runs = simulate(rng, seed_sd=0.01, run_sd=0.006,
                            seeds_of=lambda bn, _: range(3) if bn else range(10, 14))
            base, other = cell_name(True, 0.5), cell_name(False, 0.0)
            row = study_effects.versus_base(runs, [base, other], base, METRIC).iloc[0]
            true = BN_OFF + DROPOUT_0 + BOTH
        hits += row["ci_low"] <= true <= row["ci_high"]
    assert 0.93 <= hits / studies <= 0.97, hits / studies
