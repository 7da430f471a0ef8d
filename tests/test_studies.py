"""Studies: grid expansion, fill missing, cancel and delete, adaptive seeds, the time estimate,
`study show --json` against scipy/statsmodels on the stored per-run values, and a real adaptive
study through a worker. The statistics themselves: tests/test_statistics.py."""

import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sqlalchemy import update
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from cnn_ablation.config import ConfigError, RunConfig
from cnn_ablation.storage import lifecycle
from cnn_ablation.storage.curves import layer_stats_frame
from cnn_ablation.storage.engine import session_scope
from cnn_ablation.storage.models import EpochMetricRow, RunRow
from cnn_ablation.storage.runs import find_run, list_runs
from cnn_ablation.studies import estimate as study_estimate
from cnn_ablation.studies import grid as study_grid
from cnn_ablation.studies import results as study_results
from cnn_ablation.studies import rounds as study_rounds
from cnn_ablation.studies.adaptive_rule import AdaptiveRule
from cnn_ablation.studies.own_network import check_layers
from cnn_ablation.studies.presets import study_preset
from cnn_ablation.studies.spec import StudySpec
from tests.support import ROOT, TEST_WORKER

BASE = RunConfig(dataset="synthetic:100", epochs=1, batch_size=16)


# --- grid expansion -------------------------------------------------------------------------
def test_full_factorial_expands_every_combination_times_seeds():
    spec = StudySpec(BASE, {"bn_conv_2": (True, False), "bn_conv_3": (True, False),
                            "dropout": (0.0, 0.25, 0.5)}, "full", seeds=2)
    cells = spec.cells()
    assert len(cells) == 2 * 2 * 3 and len(spec.runs()) == 24
    hashes = [c.config_hash for _, c in spec.runs()]
    assert len(set(hashes)) == 24  # no duplicates
    off = next(c for c in cells if c.label == "bn_conv_2=off, bn_conv_3=on, dropout=0.25")
    assert off.config.bn == (True, False, True, True, True) and off.config.dropout == 0.25
    assert sorted({c.seed for _, c in spec.runs()}) == [0, 1]
    assert spec.base_cell().label == "bn_conv_2=on, bn_conv_3=on, dropout=0.5"
    assert spec.interaction_pairs() == [("bn_conv_2", "bn_conv_3")]  # dropout has 3 levels


def test_one_factor_at_a_time_is_the_base_plus_each_change_alone_and_has_no_interactions():
    spec = StudySpec(BASE, {"bn_conv_1": (True, False), "dropout": (0.25, 0.5, 0.75)}, "ofat", 3)
    assert [c.label for c in spec.cells()] == ["base", "bn_conv_1=off", "dropout=0.25",
                                               "dropout=0.75"]
    assert len(spec.runs()) == 4 * 3
    assert spec.base_cell().label == "base" and spec.interaction_pairs() == []


def test_presets():
    assert [c.label for c in study_preset("chapter", BASE, 2).cells()] == [
        "all BN on", "BN on conv_1 only"]
    bn = study_preset("bn_one_at_a_time", BASE, 1).cells()
    assert len(bn) == 7 and bn[-1].config.bn == (False,) * 5 and bn[-1].extra
    assert [c.config.dropout for c in study_preset("dropout_sweep", BASE, 1).cells()] == [
        0.0, 0.25, 0.5, 0.75]


def test_bad_factors_and_rules_are_refused_with_the_allowed_values():
    with pytest.raises(ConfigError, match="factor: 'bn_conv_9'.*bn_conv_1"):
        StudySpec(BASE, {"bn_conv_9": (True, False)})
    with pytest.raises(ConfigError, match="dropout: 1.5"):
        StudySpec(BASE, {"dropout": (0.5, 1.5)})
    with pytest.raises(ConfigError, match=r"target half-width \(pp\): 0 is not allowed"):
        AdaptiveRule(half_width=0, max_seeds=5)
    with pytest.raises(ConfigError, match="max seeds: 51"):
        AdaptiveRule(half_width=0.01, max_seeds=51)
    with pytest.raises(ConfigError, match="max seeds: 3 .*>= the starting seeds per cell \\(4\\)"):
        StudySpec(BASE, {"bn_conv_2": (True, False)}, seeds=4,
                  adaptive=AdaptiveRule(half_width=0.01, max_seeds=3))


def test_spec_json_round_trip_with_an_adaptive_rule_and_its_state():
    rule = AdaptiveRule(0.01, 8, 2, "test_accuracy", "", ((2, 0.03), (4, math.nan)))
    spec = study_preset("bn_one_at_a_time", BASE.with_changes(limit_train=50, val_split=0.2), 2,
                        rule)
    again = StudySpec.from_dict(json.loads(spec.to_json()))
    assert [c.config_hash for _, c in again.runs()] == [c.config_hash for _, c in spec.runs()]
    assert again.adaptive.history[0] == (2, 0.03) and math.isnan(again.adaptive.history[1][1])
    assert again.adaptive.round == 3 and again.base.limit_train == 50
    assert "NaN" not in spec.to_json()  # strict JSON, for `study show --json`


# --- fill missing ---------------------------------------------------------------------------
def test_fill_missing_queues_exactly_the_missing_and_reuses_completed_runs(engine, make_run):
    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "full", seeds=2)
    outside = spec.runs()[1][1]  # (bn_conv_2=on, seed 1) done before the study, outside it
    make_run(outside, "completed", test_accuracy=0.5)
    study_id, queued = study_grid.create(engine, spec, "reuse")
    assert len(queued) == 3
    view = study_grid.load(engine, study_id)
    grid = study_grid.grid(engine, view).set_index("cell")
    assert grid.loc["bn_conv_2=on", "seed 1"] == "completed"
    assert (grid.loc["bn_conv_2=off"][["seed 0", "seed 1"]] == "queued").all()
    assert study_grid.fill_missing(engine, study_id) == []  # nothing new while runs are queued
    lifecycle.finish(engine, queued[0], "failed", error="boom")
    assert study_grid.fill_missing(engine, study_id) == []  # failed is not missing
    again = study_grid.rerun_failed(engine, study_id)
    assert len(again) == 1
    assert find_run(engine, again[0]).config_hash == find_run(engine, queued[0]).config_hash


# --- cancel and delete ----------------------------------------------------------------------
def test_cancel_a_study_then_delete_it_keeping_or_removing_its_runs(engine, make_run, cli):
    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "full", seeds=2,
                     adaptive=AdaptiveRule(0.01, 4))
    outside = make_run(spec.runs()[0][1], "completed", accuracies=[0.6])  # not the study's own
    study_id, queued = study_grid.create(engine, spec, "to cancel")
    assert len(queued) == 3
    running = lifecycle.claim(engine, TEST_WORKER, socket.gethostname(), "cpu", 60.0)
    assert running.id == queued[0]

    refused = cli("study", "delete", str(study_id))
    assert refused.returncode == 2 and "cancel the study first" in refused.stderr
    out = cli("study", "cancel", str(study_id))
    assert out.returncode == 0, out.stderr
    assert "cancelled 2 queued run(s); 1 running run(s) stopping after their current epoch" \
        in out.stdout
    assert [find_run(engine, i).status for i in queued] == ["running", "cancelled", "cancelled"]
    assert find_run(engine, queued[0]).cancel_requested
    assert find_run(engine, outside).status == "completed"
    assert study_grid.load(engine, study_id).spec.adaptive.stopped == "cancelled by user"
    assert study_rounds.advance(engine) == []  # a cancelled adaptive study adds no rounds

    lifecycle.finish(engine, running.id, "cancelled", worker_id=TEST_WORKER)
    kept = cli("study", "delete", str(study_id))
    assert kept.returncode == 0 and "its runs are kept" in kept.stdout
    assert len(list_runs(engine)) == 4 and all(r.study_id is None for r in list_runs(engine))
    assert cli("study", "show", str(study_id)).returncode == 2

    other, ids = study_grid.create(engine, StudySpec(BASE, {"dropout": (0.1, 0.2)}, seeds=1), "x")
    study_grid.cancel(engine, other)
    gone = cli("study", "delete", str(other), "--with-runs")
    assert gone.returncode == 0 and "with 2 run(s)" in gone.stdout, gone.stderr
    assert all(find_run(engine, i) is None for i in ids) and len(list_runs(engine)) == 4


# --- adaptive seeds -------------------------------------------------------------------------
def finish_queued(engine, value_of, rng):
    """Claim and complete every queued run, its final val accuracy `value_of(cell_bn, seed)`
    plus noise: what a worker does, without training."""
    while (run := lifecycle.claim(engine, TEST_WORKER, socket.gethostname(), "cpu", 60.0)):
        value = value_of(run.config["bn"][1] == 1, run.seed) + rng.normal(0, 1) * 1e-3
        lifecycle.record_epoch(engine, run.id, TEST_WORKER, 1, {
            "loss": 1.0, "accuracy": value, "val_loss": 1.0, "val_accuracy": value}, seconds=1.0)
        lifecycle.finish(engine, run.id, "completed", worker_id=TEST_WORKER,
                         test_accuracy=value)


def test_adaptive_seeds_add_rounds_until_the_seed_limit_when_precision_is_not_reached(engine):
    rng = np.random.default_rng(3)
    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "full", seeds=2,
                     adaptive=AdaptiveRule(half_width=0.001, max_seeds=5, step=2))
    study_id, queued = study_grid.create(engine, spec, "adaptive")
    assert len(queued) == 4 and study_rounds.advance(engine) == []  # round 1 still queued
    noisy = lambda on, seed: 0.7 + (0.02 if on else 0) + rng.normal(0, 0.01)  # noqa: E731
    finish_queued(engine, noisy, rng)
    stale = study_grid.load(engine, study_id)
    second = study_rounds.advance(engine)
    assert len(second) == 4  # 2 cells x seeds 2 and 3
    assert sorted(find_run(engine, i).seed for i in second) == [2, 2, 3, 3]
    assert all(find_run(engine, i).study_id == study_id for i in second)
    assert study_rounds._advance_one(engine, stale) == []  # a stale caller queues nothing twice
    assert study_rounds.advance(engine) == []
    view = study_grid.load(engine, study_id)
    assert view.spec.seeds == 4 and view.spec.adaptive.round == 2
    assert "Round 2 (4 seeds per cell): running." in study_grid.adaptive_text(
        view, study_grid.attempts(engine, view))
    finish_queued(engine, noisy, rng)
    third = study_rounds.advance(engine)
    assert len(third) == 2  # the step is cut at the limit: only seed 4
    finish_queued(engine, noisy, rng)
    assert study_rounds.advance(engine) == []
    view = study_grid.load(engine, study_id)
    rule = view.spec.adaptive
    assert rule.stopped.startswith("seed limit reached after round 3: 5 seeds per cell")
    assert [s for s, _ in rule.history] == [2, 4, 5]
    result = study_results.results(engine, view)
    assert result["complete"] and result["total"] == 10
    half = (result["effects"]["ci_high"] - result["effects"]["ci_low"]) / 2
    assert rule.history[-1][1] == pytest.approx(float(half.max()))
    assert f"Stopped: {rule.stopped}." in study_grid.adaptive_text(view)


def test_adaptive_seeds_stop_once_every_interval_is_narrow_enough(engine):
    rng = np.random.default_rng(4)
    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "full", seeds=3,
                     adaptive=AdaptiveRule(half_width=0.01, max_seeds=10, step=2))
    study_id, _ = study_grid.create(engine, spec, "precise")
    finish_queued(engine, lambda on, seed: 0.7 + (0.02 if on else 0) + 0.01 * seed, rng)
    assert study_rounds.advance(engine) == []
    rule = study_grid.load(engine, study_id).spec.adaptive
    assert rule.stopped.startswith("precision reached after round 1: every 95 % interval is "
                                   "narrower than ±1 pp")
    assert rule.history[0][0] == 3 and rule.history[0][1] < 0.01


def test_an_adaptive_round_with_a_failed_run_waits_instead_of_judging(engine, make_run):
    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "full", seeds=2,
                     adaptive=AdaptiveRule(half_width=0.01, max_seeds=4))
    study_id, queued = study_grid.create(engine, spec, "waits")
    rng = np.random.default_rng(5)
    lifecycle.request_cancel(engine, queued[-1])
    finish_queued(engine, lambda on, seed: 0.7, rng)
    assert study_rounds.advance(engine) == []
    view = study_grid.load(engine, study_id)
    assert not view.spec.adaptive.stopped and view.spec.seeds == 2
    assert "waiting" in study_grid.adaptive_text(view, study_grid.attempts(engine, view))


# --- time estimate --------------------------------------------------------------------------
def timed_run(engine, make_run, config, started, epochs, finished):
    """A completed run with the given times: `epochs` as (seconds, recorded_at)."""
    run_id = make_run(config, "completed", accuracies=[0.5] * len(epochs), started_at=started,
                      finished_at=finished)
    with session_scope(engine) as session:
        for epoch, (seconds, at) in enumerate(epochs, start=1):
            session.execute(update(EpochMetricRow).where(
                EpochMetricRow.run_id == run_id, EpochMetricRow.epoch == epoch).values(
                seconds=seconds, recorded_at=at))
    return run_id


def test_time_estimate_adds_start_up_epochs_and_test_time_of_comparable_runs(engine, make_run):
    config = RunConfig(dataset="synthetic:2000", epochs=2)  # 1,800 fit images per epoch
    # start-up 2 s (1000 -> first epoch began at 1002), epochs 3 s then 1 s, test 0.5 s
    timed_run(engine, make_run, config, 1000.0, [(3.0, 1005.0), (1.0, 1006.0)], 1006.5)
    spec = StudySpec(config.with_changes(epochs=3), {"bn_conv_2": (True, False)}, seeds=2)
    seconds, basis = study_estimate.estimate_seconds(engine, spec)
    assert seconds == pytest.approx(4 * (2 + 3 + 2 * 1 + 0.5))
    assert "start-up 2.0 s, test 0.5 s" in basis and "1 slot(s)" in basis

    half = spec.base.with_changes(limit_train=1000)  # 900 fit images: epochs take half as long
    seconds, basis = study_estimate.estimate_seconds(engine, StudySpec(half, spec.factors, seeds=2))
    assert seconds == pytest.approx(4 * (2 + 1.5 + 2 * 0.5 + 0.5))
    assert "scaled by training images for 4 run(s)" in basis

    done = spec.runs()[0][1]  # a completed run of one of the study's configs: not counted again
    timed_run(engine, make_run, done, 2000.0, [(3.0, 2005.0), (1.0, 2006.0), (1.0, 2007.0)],
              2007.5)
    seconds, _ = study_estimate.estimate_seconds(engine, spec)
    assert seconds == pytest.approx(3 * (2 + 3 + 2 * 1 + 0.5))

    other = StudySpec(RunConfig(dataset="synthetic:3000"), {"dropout": (0.1, 0.2)})
    assert study_estimate.estimate_seconds(engine, other) == (None, pytest.approx(
        "no estimate yet: no finished seed run on synthetic:3000 on this machine; the first one "
        "gives the estimate"))


def test_time_estimate_of_your_own_network_counts_only_that_networks_runs(engine, make_run):
    """Every network of your own shares the preset `custom`: another network's runs must not
    stand in for this one's."""
    def config(key):
        return RunConfig(dataset="synthetic:2000", epochs=2, network=key)

    def custom_run(key, started, epochs, finished):
        # stored as a run of that network would be (queueing one would probe a real .keras file)
        run_id = timed_run(engine, make_run, RunConfig(dataset="synthetic:2000", epochs=2),
                           started, epochs, finished)
        with session_scope(engine) as session:
            session.execute(update(RunRow).where(RunRow.id == run_id).values(
                preset="custom", config_json=config(key).to_json()))

    mine, other = "file:a@0000000000a1", "file:b@0000000000b2"
    custom_run(other, 1000.0, [(30.0, 1032.0), (10.0, 1042.0)], 1047.0)
    spec = StudySpec(config(mine), {"bn:b1_bn": (True, False)}, seeds=1)
    assert study_estimate.estimate_seconds(engine, spec)[0] is None  # no run of this network yet
    custom_run(mine, 2000.0, [(3.0, 2005.0), (1.0, 2006.0)], 2006.5)
    seconds, _ = study_estimate.estimate_seconds(engine, spec)
    assert seconds == pytest.approx(2 * (2 + 3 + 1 + 0.5))  # this network's pace, not the other's


# --- every number of `study show --json` ----------------------------------------------------
def simulated_study(make_run, spec, value_of, skip=(), repeat=()):
    """Completed runs of `spec` with final val accuracy `value_of(cell, seed)`; `skip`: (cell,
    seed) left queued; `repeat`: (cell, seed) run twice. Returns {(cell, seed): [values]}."""
    values: dict = {}
    for cell, config in spec.runs():
        key = (cell.label, config.seed)
        for extra in range(2 if key in repeat else 1):
            if key in skip:
                make_run(config, "queued")
                continue
            value = round(value_of(cell, config.seed) + 0.001 * extra, 6)
            make_run(config, "completed", accuracies=[value + 0.05])  # val = acc - 0.05
            values.setdefault(key, []).append(value)
    return values


def seed_means(values, cell, seeds):
    return np.array([np.mean(values[(cell, s)]) for s in seeds])


def test_show_json_gives_every_number_as_scipy_and_statsmodels_give_it(engine, make_run, cli):
    rng = np.random.default_rng(21)
    spec = StudySpec(BASE, {"bn_conv_2": (True, False), "dropout": (0.5, 0.0)}, "full", seeds=4)
    shift = rng.normal(0, 0.01, 4)

    def value_of(cell, seed):
        bn, dropout = cell.levels["bn_conv_2"], cell.levels["dropout"]
        return (0.7 - (0 if bn else 0.03) + (0.01 if dropout == 0.0 else 0)
                + (0.02 if not bn and dropout == 0.0 else 0) + shift[seed] + rng.normal(0, 0.005))

    repeat = {("bn_conv_2=on, dropout=0.5", 2)}
    values = simulated_study(make_run, spec, value_of, repeat=repeat)
    study_id = study_grid.create(engine, spec, "json")[0]
    out = cli("study", "show", str(study_id), "--json", "--power-pp", "0.5")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["status"] == {"state": "complete", "completed_runs": 16, "total_runs": 16,
                               "text": "complete: 16 of 16 runs"}
    seeds = range(4)
    cells = {c.label: c for c in spec.cells()}
    base = "bn_conv_2=on, dropout=0.5"
    for row in shown["summary"]:
        x = seed_means(values, row["cell"], seeds)
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
        assert row["n"] == 4 and row["runs"] == 4 + ((row["cell"], 2) in repeat)
        assert row["final_val_accuracy_mean"] == pytest.approx(x.mean(), abs=1e-9)
        assert row["final_val_accuracy_std"] == pytest.approx(x.std(ddof=1), abs=1e-9)
        assert (row["final_val_accuracy_ci_low"], row["final_val_accuracy_ci_high"]) == \
            pytest.approx((ci.low, ci.high), abs=1e-9)
        if row["cell"] == base:
            assert row["is_base"] and row["delta"] is None
            continue
        test = stats.ttest_rel(x, seed_means(values, base, seeds))
        ci = test.confidence_interval(0.95)
        assert row["delta"] == pytest.approx(np.mean(x - seed_means(values, base, seeds)),
                                             abs=1e-9)
        assert (row["delta_ci_low"], row["delta_ci_high"]) == pytest.approx((ci.low, ci.high),
                                                                            abs=1e-9)
        assert row["delta_p"] == pytest.approx(test.pvalue, rel=1e-6)
    deltas = [r for r in shown["summary"] if not r["is_base"]]
    # a factorial design's cells vs the base: numbers without a verdict (the effects carry them)
    assert [(r["delta_p_holm"], r["delta_verdict_holm"]) for r in deltas] == [(None, "")] * 3

    def side(bn=None, dropout=None):
        chosen = [c for c in cells.values()
                  if (bn is None or c.levels["bn_conv_2"] == bn)
                  and (dropout is None or c.levels["dropout"] == dropout)]
        return np.mean([seed_means(values, c.label, seeds) for c in chosen], axis=0)

    effects = {e["factor"]: e for e in shown["effects"]}
    assert shown["effects_kind"] == "main effects"
    expected_p = []
    for factor, on, off in (("bn_conv_2", side(bn=True), side(bn=False)),
                            ("dropout", side(dropout=0.5), side(dropout=0.0))):
        test = stats.ttest_rel(off, on)
        ci = test.confidence_interval(0.95)
        e = effects[factor]
        assert e["effect"] == pytest.approx(np.mean(off - on), abs=1e-9)
        assert (e["ci_low"], e["ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
        assert e["p"] == pytest.approx(test.pvalue, rel=1e-6) and e["n"] == 4 and e["paired"]
        need = TTestPower().solve_power(effect_size=0.005 / np.std(off - on, ddof=1),
                                        alpha=0.05, power=0.8)
        assert e["seeds_needed"] == max(2, math.ceil(need))
        expected_p.append((factor, test.pvalue))
    (inter,) = shown["interactions"]
    diff = ((seed_means(values, "bn_conv_2=off, dropout=0", seeds)
             - seed_means(values, "bn_conv_2=off, dropout=0.5", seeds))
            - (seed_means(values, "bn_conv_2=on, dropout=0", seeds)
               - seed_means(values, base, seeds)))
    test = stats.ttest_1samp(diff, 0.0)
    ci = test.confidence_interval(0.95)
    assert (inter["effect"], inter["ci_low"], inter["ci_high"]) == pytest.approx(
        (diff.mean(), ci.low, ci.high), abs=1e-9)
    expected_p.append(("interaction", test.pvalue))
    # one Holm family over every verdict: both main effects and the interaction
    holm = dict(zip([f for f, _ in expected_p],
                    multipletests([p for _, p in expected_p], method="holm")[1], strict=True))
    for factor, e in [*effects.items(), ("interaction", inter)]:
        assert e["p_holm"] == pytest.approx(holm[factor], rel=1e-6)
        assert (e["verdict_holm"] == "beyond noise") == (holm[factor] < 0.05)
    need = TTestPower().solve_power(effect_size=0.005 / np.std(diff, ddof=1), alpha=0.05,
                                    power=0.8)
    assert inter["seeds_needed"] == max(2, math.ceil(need))
    # the hint covers every statement judged: both main effects and the interaction
    assert shown["power"]["target_pp"] == 0.5 and shown["power"]["seeds_needed"] == max(
        *(e["seeds_needed"] for e in effects.values()), inter["seeds_needed"])
    assert shown["primary_metric"] == "final_val_accuracy" and not shown["exploratory"]
    assert "(" in shown["words"] and "Provisional" not in shown["words"]


def test_an_incomplete_study_is_provisional_on_the_page_and_in_the_cli(engine, make_run, cli):
    from streamlit.testing.v1 import AppTest

    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "ofat", seeds=3)
    rng = np.random.default_rng(22)
    simulated_study(make_run, spec, lambda cell, seed: 0.7 - 0.1 * (cell.label != "base")
                    + rng.normal(0, 0.001), skip={("bn_conv_2=off", 2)})
    study_id = study_grid.create(engine, spec, "half done")[0]
    text = cli("study", "show", str(study_id))
    assert text.returncode == 0, text.stderr
    assert "provisional: 5 of 6 runs" in text.stdout
    assert "Provisional: 5 of 6 runs. No verdict until every cell has all its seeds" in text.stdout
    for claim in ("beyond noise", "lowered", "mattered"):
        assert claim not in text.stdout
    shown = json.loads(cli("study", "show", str(study_id), "--json").stdout)
    assert shown["status"]["state"] == "provisional" and shown["interactions"] == []
    assert shown["effects_kind"] == "each cell vs the base"
    assert [e["verdict"] for e in shown["effects"]] == ["provisional"]

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("cnn_ablation/ui/studies.py").run()
    assert not at.exception, at.exception
    assert any("Provisional: 5 of 6 runs" in w.value for w in at.warning)
    page = " ".join(m.value for m in at.markdown)
    assert "beyond noise" not in page and "lowered" not in page
    effects = at.dataframe[2].value  # grid, per cell, effects: in page order
    assert list(effects["verdict"]) == ["provisional"]


def test_every_number_the_studies_page_shows_is_what_scipy_and_statsmodels_give(engine,
                                                                              make_run):
    """The page's per-cell and effects tables, as text, against scipy/statsmodels on the same
    per-run values (a one-at-a-time study of three cells: each cell against the base, paired by
    seed, two effects at once so Holm's column is there; one (cell, seed) run twice)."""
    from streamlit.testing.v1 import AppTest

    spec = StudySpec(BASE, {"bn_conv_2": (True, False), "bn_conv_3": (True, False)}, "ofat",
                     seeds=4)
    rng = np.random.default_rng(23)
    shift = rng.normal(0, 0.01, 4)
    moved = {"base": 0.0, "bn_conv_2=off": -0.03, "bn_conv_3=off": -0.004}
    repeat = {("bn_conv_3=off", 1)}
    values = simulated_study(make_run, spec, lambda cell, seed: 0.7 + moved[cell.label]
                             + shift[seed] + rng.normal(0, 0.004), repeat=repeat)
    study_grid.create(engine, spec, "page numbers")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("cnn_ablation/ui/studies.py").run()
    assert not at.exception, at.exception
    tables = [d.value for d in at.dataframe]
    per_cell = next(t for t in tables if "Δ vs base (95 % CI)" in t.columns)
    effects = next(t for t in tables if "effect (95 % CI)" in t.columns)

    def pct(x):
        return f"{100 * x:.1f}"

    def pp(value, low, high):
        return f"{100 * value:+.1f} pp [{100 * low:+.1f}, {100 * high:+.1f}]"

    seeds = range(4)
    base = seed_means(values, "base", seeds)
    expected_p = {}
    for row in per_cell.to_dict("records"):
        x = seed_means(values, row["cell"], seeds)
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
        assert row["final val acc"] == (f"{pct(x.mean())} ± {pct(x.std(ddof=1))} % "
                                        f"[{pct(ci.low)}, {pct(ci.high)}]")
        assert row["seeds"] == 4 and row["runs"] == 4 + (row["cell"] == "bn_conv_3=off")
        if row["cell"] == "base":
            assert row["Δ vs base (95 % CI)"] == "base"
            continue
        test = stats.ttest_rel(x, base)
        ci = test.confidence_interval(0.95)
        assert row["Δ vs base (95 % CI)"] == pp(np.mean(x - base), ci.low, ci.high)
        expected_p[row["cell"]] = (test, np.std(x - base, ddof=1))
    assert set(expected_p) == {"bn_conv_2=off", "bn_conv_3=off"}
    holm = dict(zip(expected_p, multipletests([t.pvalue for t, _ in expected_p.values()],
                                              method="holm")[1], strict=True))
    assert len(effects) == 2
    for row in effects.to_dict("records"):
        test, sd = expected_p[row["cell"]]
        ci = test.confidence_interval(0.95)
        x = seed_means(values, row["cell"], seeds)
        assert row["effect (95 % CI)"] == pp(np.mean(x - base), ci.low, ci.high)
        assert row["p"] == f"{test.pvalue:.3g}" and row["p (Holm)"] == f"{holm[row['cell']]:.3g}"
        assert row["paired by seed"] == "yes" and row["seeds"] == 4
        # the study's smallest change that matters is 1 pp (the default): an interval holding
        # zero is "within noise" only inside ±1 pp, else "inconclusive"
        # one verdict column, Holm's (a raw "beyond noise" is not shown as a verdict)
        quiet = "within noise" if ci.low >= -0.01 and ci.high <= 0.01 else "inconclusive"
        raw_beyond = ci.low > 0 or ci.high < 0
        assert row["verdict"] == ("beyond noise" if holm[row["cell"]] < 0.05
                                  else "inconclusive" if raw_beyond else quiet)
        need = TTestPower().solve_power(effect_size=0.01 / sd, alpha=0.05, power=0.8)
        assert row["seeds needed"] == f"{max(2, math.ceil(need)):.0f}"  # the default 1 pp
    assert any("complete: 12 of 12 runs" in str(p.text) for p in at.get("progress"))


# --- a real adaptive study ------------------------------------------------------------------
@pytest.mark.slow
def test_an_adaptive_study_runs_to_its_stopping_rule_through_a_real_worker(engine, home, cli):
    """Two cells, 2 seeds in round 1 (the least Stein's rule plans from), at most 3: the target
    (±0.01 pp) asks for more than 3, so round 2 adds the third seed and it stops at the seed
    limit after round 2. The worker is the real one (`worker --once`); the study queues its next round itself
    (`advance`), as it does when the worker, a page refresh or `study show` calls it."""
    from streamlit.testing.v1 import AppTest

    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "full", seeds=2,
                     adaptive=AdaptiveRule(half_width=0.0001, max_seeds=3, step=1))
    study_id, queued = study_grid.create(engine, spec, "adaptive real")
    assert len(queued) == 4
    env = {**os.environ, "ABLATION_HOME": str(home), "ABLATION_HEARTBEAT_SECONDS": "2"}
    rounds = 0
    while True:
        worker = subprocess.run([sys.executable, "-m", "cnn_ablation", "worker", "--once",
                                 "--gpus", "none"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=600)
        assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]
        rounds += 1
        ended = list_runs(engine)
        assert {r.status for r in ended} == {"completed"}, [(r.id, r.status, r.error)
                                                            for r in ended]
        if not study_rounds.advance(engine):
            break
        assert rounds < 3
    view = study_grid.load(engine, study_id)
    rule = view.spec.adaptive
    # the worker advances the study itself when a run ends, so one `worker --once` runs both
    assert rounds == 1 and view.spec.seeds == 3 and len(list_runs(engine, study_id=study_id)) == 6
    assert rule.stopped.startswith("seed limit reached after round 2: 3 seeds per cell")
    assert [s for s, _ in rule.history] == [2, 3] and rule.planned == 3
    result = study_results.results(engine, view)
    assert result["complete"] and result["done"] == 6 and result["stein"] == 2
    assert (result["summary"]["n"] == 3).all()
    assert result["effects"]["n"].tolist() == [3] and result["effects"]["paired"].all()
    stats_frame = layer_stats_frame(engine, result["completed"]["run_id"].tolist())
    assert len(stats_frame) == 6 * 6  # every run, every weighted layer, its one epoch

    shown = cli("study", "show", str(study_id))
    assert "Adaptive seeds: the first round's spread plans the seeds per cell" in shown.stdout
    assert "Stopped: seed limit reached after round 2" in shown.stdout

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("cnn_ablation/ui/studies.py").run()
    assert not at.exception, at.exception
    assert list(at.dataframe[0].value["done"]) == [3, 3]  # grid, per cell: in page order
    assert list(at.dataframe[1].value["seeds"]) == [3, 3]
    assert any("Stopped: seed limit reached after round 2" in i.value for i in at.info)
    assert any("noise" in m.value for m in at.markdown)
    assert find_run(engine, queued[0]).environment is not None


def test_the_page_cancels_then_deletes_a_study_keeping_its_runs(engine):
    from streamlit.testing.v1 import AppTest

    study_id, queued = study_grid.create(engine, StudySpec(BASE, {"dropout": (0.1, 0.2)}, seeds=2),
                                      "from the page")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("cnn_ablation/ui/studies.py").run()
    assert not at.exception, at.exception
    assert any("provisional: 0 of 4 runs" in str(p.text) for p in at.get("progress"))
    at.button(key="delete_confirm").click().run()
    assert any("cancel the study first" in e.value for e in at.error)
    at.button(key="cancel_confirm").click().run()
    assert not at.exception, at.exception
    assert {find_run(engine, i).status for i in queued} == {"cancelled"}
    at.button(key="delete_confirm").click().run()
    assert not at.exception, at.exception
    assert any(f"Study #{study_id} deleted." in s.value for s in at.success)
    assert "No studies yet" in at.info[0].value
    assert len(list_runs(engine)) == 4 and all(r.study_id is None for r in list_runs(engine))


@pytest.mark.parametrize("flags,says", [
    (["--max-seeds", "5"], "max_seeds: 5 is not allowed; allowed: only with --target-pp"),
    (["--target-pp", "1"], "max_seeds: None is not allowed; allowed: a whole number"),
    (["--target-pp", "0", "--max-seeds", "5"], "target_pp: 0.0 is not allowed"),
    (["--target-pp", "1", "--max-seeds", "2", "--seeds", "3"],
     "max seeds: 2 is not allowed; allowed: a whole number >= the starting seeds per cell (3)"),
])
def test_bad_adaptive_flags_are_refused_before_anything_is_written(home, cli, flags, says):
    out = cli("study", "create", "--dataset", "synthetic:100", "--factor", "bn_conv_2", *flags)
    assert out.returncode == 2 and says in out.stderr, out.stderr
    assert list(home.iterdir()) == []


def test_a_study_takes_every_run_setting_new_run_takes_on_the_page_and_in_the_cli(engine, cli):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("cnn_ablation/ui/studies.py").run()
    for kind, key, value in (("selectbox", "study_dataset", "synthetic"),
                             ("number_input", "study_epochs", 3),
                             ("number_input", "study_seeds", 2),
                             ("number_input", "study_batch_size", 8),
                             ("number_input", "study_lr", 0.002),
                             ("number_input", "study_val_split", 0.25),
                             ("number_input", "study_limit_train", 400),
                             ("multiselect", "study_bn_factors", ["bn_conv_4"])):
        next(w for w in getattr(at, kind) if w.key == key).set_value(value)
        at.run()
    at.button(key="start_custom").click().run()
    assert not at.exception, at.exception
    page_runs = list_runs(engine)
    assert len(page_runs) == 4
    for run in page_runs:
        config = RunConfig.from_json(run.config_json)
        assert (config.dataset, config.epochs, config.batch_size, config.learning_rate,
                config.val_split, config.limit_train) == ("synthetic", 3, 8, 0.002, 0.25, 400)
    assert {(RunConfig.from_json(r.config_json).bn or ())[3] for r in page_runs} == {0, 1}

    out = cli("study", "create", "--dataset", "synthetic:200", "--epochs", "2", "--batch-size",
              "16", "--lr", "0.001", "--val-split", "0.3", "--limit-train", "150", "--factor",
              "dropout=0.1,0.4", "--seeds", "1")
    assert out.returncode == 0, out.stderr
    cli_runs = [r for r in list_runs(engine) if r.id not in {p.id for p in page_runs}]
    assert len(cli_runs) == 2
    for run in cli_runs:
        config = RunConfig.from_json(run.config_json)
        assert (config.dataset, config.epochs, config.batch_size, config.learning_rate,
                config.val_split, config.limit_train) == ("synthetic:200", 2, 16, 0.001, 0.3, 150)


def studies_page(link: str | None = None):
    """A new browser session on the Studies page, opened with `?study=LINK` if given."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    if link is not None:
        at.query_params["study"] = link
    at.switch_page("cnn_ablation/ui/studies.py").run()
    assert not at.exception, at.exception
    return at


def shown_study(at) -> int:
    return next(s for s in at.selectbox if s.label == "Study").value


def test_the_studies_page_address_names_the_study_shown_so_a_reload_shows_it_again(engine):
    first, _ = study_grid.create(engine, StudySpec(BASE, {"dropout": (0.1, 0.2)}, seeds=1), "one")
    second, _ = study_grid.create(engine, StudySpec(BASE, {"bn_conv_2": (True, False)}, seeds=3),
                               "two")
    at = studies_page()  # no address: the latest study, and the address now names it
    assert shown_study(at) == second and at.query_params["study"] == str(second)
    assert any("provisional: 0 of 6 runs" in str(p.text) for p in at.get("progress"))

    next(s for s in at.selectbox if s.label == "Study").set_value(first).run()
    assert shown_study(at) == first and at.query_params["study"] == str(first)
    assert any("provisional: 0 of 2 runs" in str(p.text) for p in at.get("progress"))

    reloaded = studies_page(str(first))  # a reload, or the link pasted elsewhere
    assert shown_study(reloaded) == first
    assert any("provisional: 0 of 2 runs" in str(p.text) for p in reloaded.get("progress"))
    assert not [w.value for w in reloaded.warning if "(from the link)" in w.value]


@pytest.mark.parametrize("link", ["99", "two", "-1", "1.5", "", "1" * 40])
def test_a_link_to_a_study_that_does_not_exist_says_so_and_shows_the_latest(engine, link):
    for name, levels in (("one", (0.1, 0.2)), ("two", (0.3, 0.4))):
        study_grid.create(engine, StudySpec(BASE, {"dropout": levels}, seeds=1), name)
    at = studies_page(link)
    warnings = [w.value for w in at.warning]
    assert any("study: " in w and "(from the link) is not allowed; allowed: the number of a "
               "study that exists (#1 to #2). Showing the latest, #2." in w
               for w in warnings), warnings
    assert shown_study(at) == 2 and at.query_params["study"] == "2"
    assert len(list_runs(engine)) == 4  # nothing queued by a bad link


# --- your own network's layers as factors (issue 14) ----------------------------------------
NET = RunConfig(network="file:resnet@0123456789ab", dataset="synthetic:100", epochs=1,
                batch_size=16)


def test_your_networks_batchnorm_and_dropout_layers_are_factors_of_a_grid():
    from cnn_ablation.studies.factors import parse_factor

    factors = dict(parse_factor(f) for f in ("bn:b1_bn", "bn:b2_bn", "dropout:head_drop=0.1,0.3"))
    assert factors == {"bn:b1_bn": (True, False), "bn:b2_bn": (True, False),
                       "dropout:head_drop": (0.1, 0.3)}
    spec = StudySpec(NET, factors, "full", seeds=2)
    cells = {c.label: c for c in spec.cells()}
    assert len(cells) == 8 and len(spec.runs()) == 16
    off = cells["bn:b1_bn=off, bn:b2_bn=on, dropout:head_drop=0.3"].config
    assert off.bn_off == ("b1_bn",) and off.layer_dropout == (("head_drop", 0.3),)
    assert off.network == NET.network and off.preset == "custom"
    both = cells["bn:b1_bn=off, bn:b2_bn=off, dropout:head_drop=0.1"].config
    assert both.bn_off == ("b1_bn", "b2_bn")
    assert spec.base_cell().label == "bn:b1_bn=on, bn:b2_bn=on, dropout:head_drop=0.1"
    assert spec.interaction_pairs() == [("bn:b1_bn", "bn:b2_bn"),
                                        ("bn:b1_bn", "dropout:head_drop"),
                                        ("bn:b2_bn", "dropout:head_drop")]
    assert StudySpec.from_dict(json.loads(spec.to_json())) == spec
    # one at a time against a base that already switches b2_bn off: b2_bn's change is "on"
    ofat = StudySpec(NET.with_changes(bn_off=("b2_bn",)), {"bn:b1_bn": (True, False),
                                                          "bn:b2_bn": (True, False)}, "ofat", 1)
    assert [(c.label, c.config.bn_off) for c in ofat.cells()] == [
        ("base", ("b2_bn",)), ("bn:b1_bn=off", ("b1_bn", "b2_bn")), ("bn:b2_bn=on", ())]


@pytest.mark.parametrize("factors,says", [
    ({"dropout": (0.1, 0.3)}, "factor: 'dropout' .*dropout:<Dropout layer>"),
    ({"bn_conv_1": (True, False)}, "factor: 'bn_conv_1' .*bn:<BatchNorm layer>"),
    ({"bn:has space": (True, False)}, "factor: 'bn:has space'"),
    ({"dropout:head_drop": (0.1, 1.5)}, r"dropout:head_drop: 1.5 .*\[0, 1\)"),
    ({"dropout:head_drop": (0.3, 0.3)}, "at least two different levels"),
])
def test_bad_factors_of_your_network_are_refused_naming_the_field(factors, says):
    with pytest.raises(ConfigError, match=says):
        StudySpec(NET, factors)


def test_a_factor_naming_a_layer_your_network_lacks_is_refused_with_the_layers_it_has():
    spec = StudySpec(NET, {"bn:b1_bn": (True, False), "bn:b9_bn": (True, False)})
    check_layers(spec.factors, ["b1_bn", "b9_bn"], [])  # both there: nothing to say
    with pytest.raises(ConfigError, match="factor: 'bn:b9_bn' .*bn:b1_bn, bn:b2_bn") as refused:
        check_layers(spec.factors, ["b1_bn", "b2_bn"], ["head_drop"])
    assert refused.value.field == "factor"
    drop = StudySpec(NET, {"dropout:nope": (0.1, 0.2)})
    with pytest.raises(ConfigError, match="it has no Dropout layer"):
        check_layers(drop.factors, ["b1_bn"], [])
    with pytest.raises(ConfigError, match="study preset: 'chapter'"):
        study_preset("chapter", NET)
    with pytest.raises(ConfigError, match="factor: 'bn:b1_bn' .*your own network"):
        StudySpec(BASE, {"bn:b1_bn": (True, False)})  # the chapter's network has positions


def test_a_study_over_a_folder_dataset_queues_every_cell_and_seed(engine, home):
    """A folder dataset's runs state its image size (`new_run` fills it in), so their hashes
    differ from the planned configs'; create matched them by hash and queued nothing."""
    from tests.test_datasets import make_folder

    root = home / "pets"
    make_folder(root, [(8, 8)] * 6)
    spec = study_preset("chapter", RunConfig(dataset=f"folder:{root}", epochs=1, batch_size=2,
                                             val_split=0.0), seeds=2)
    study_id, queued = study_grid.create(engine, spec, "pets")
    assert len(queued) == 4
    configs = [RunConfig.from_json(r.config_json) for r in list_runs(engine, study_id=study_id)]
    assert {c.image_size for c in configs} == {(8, 8)}
    assert sorted(c.seed for c in configs) == [0, 0, 1, 1]
    view = study_grid.load(engine, study_id)  # and the study finds them: none is "missing"
    assert view.spec.base.image_size == (8, 8)
    assert study_grid.progress(view, study_grid.grid(engine, view)) == (0, 4)
    assert "missing" not in study_grid.grid(engine, view).to_string()


def test_a_studys_results_are_read_from_disk_by_a_new_process_and_only_when_they_match(home):
    """studies.saved_results: what was analysed once is read back (the analysis is not run
    again), a different key or a damaged file is analysed again, and an unwritable home still
    shows the results. The Studies page reads a study through it in a new server process."""
    from cnn_ablation.studies import saved_results

    calls = []

    def analyse(value):
        def run():
            calls.append(value)
            return {"effects": pd.DataFrame({"effect": [value]}), "value": value}
        return run

    first = saved_results.saved(("db", 1, "spec", ((1, 2),), "val_accuracy", 1.0), analyse(0.5))
    again = saved_results.saved(("db", 1, "spec", ((1, 2),), "val_accuracy", 1.0), analyse(9.9))
    assert calls == [0.5] and again["value"] == 0.5
    assert again["effects"].equals(first["effects"])
    moved = saved_results.saved(("db", 1, "spec", ((1, 3),), "val_accuracy", 1.0), analyse(0.7))
    assert calls == [0.5, 0.7] and moved["value"] == 0.7
    files = sorted(saved_results.folder().glob("*.pickle"))
    assert len(files) == 2 and not list(saved_results.folder().glob("*.part"))
    for path in files:
        path.write_bytes(b"not a pickle")
    assert saved_results.saved(("db", 1, "spec", ((1, 2),), "val_accuracy", 1.0),
                               analyse(0.6))["value"] == 0.6
    assert calls == [0.5, 0.7, 0.6]
    for path in saved_results.folder().glob("*"):
        path.unlink()
    saved_results.folder().chmod(0o500)
    try:
        if os.access(saved_results.folder(), os.W_OK):  # root writes anyway: a file in its way
            saved_results.folder().chmod(0o700)
            saved_results.folder().rmdir()
            saved_results.folder().write_text("a file where the folder goes")
        assert saved_results.saved(("db", 2), analyse(0.8))["value"] == 0.8
        assert saved_results.saved(("db", 2), analyse(0.9))["value"] == 0.9  # not saved
    finally:
        if saved_results.folder().is_dir():
            saved_results.folder().chmod(0o700)
