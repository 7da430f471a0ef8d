"""Studies: grid expansion, fill missing, statistics with known answers, and a real small study."""

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cnn_ablation import analysis, studies
from cnn_ablation.config import ConfigError, RunConfig
from cnn_ablation.study_spec import StudySpec, study_preset
from storage import lifecycle
from storage.read_models import layer_stats_frame
from storage.runs import find_run
from tests.support import ROOT

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


def test_one_factor_at_a_time_is_the_base_plus_each_change_alone():
    spec = StudySpec(BASE, {"bn_conv_1": (True, False), "dropout": (0.25, 0.5, 0.75)}, "ofat", 3)
    assert [c.label for c in spec.cells()] == ["base", "bn_conv_1=off", "dropout=0.25",
                                               "dropout=0.75"]
    assert len(spec.runs()) == 4 * 3


def test_presets():
    assert [c.label for c in study_preset("chapter", BASE, 2).cells()] == [
        "all BN on", "BN on conv_1 only"]
    bn = study_preset("bn_one_at_a_time", BASE, 1).cells()
    assert len(bn) == 7 and bn[-1].config.bn == (False,) * 5
    assert [c.config.dropout for c in study_preset("dropout_sweep", BASE, 1).cells()] == [
        0.0, 0.25, 0.5, 0.75]


def test_bad_factors_are_refused_with_the_allowed_names():
    with pytest.raises(ConfigError, match="factor: 'bn_conv_9'.*bn_conv_1"):
        StudySpec(BASE, {"bn_conv_9": (True, False)})
    with pytest.raises(ConfigError, match="dropout: 1.5"):
        StudySpec(BASE, {"dropout": (0.5, 1.5)})


def test_spec_json_round_trip():
    spec = study_preset("bn_one_at_a_time", BASE, 2)
    again = StudySpec.from_dict(spec.to_dict())
    assert [c.config_hash for _, c in again.runs()] == [c.config_hash for _, c in spec.runs()]


# --- fill missing ---------------------------------------------------------------------------
def test_fill_missing_queues_exactly_the_missing_and_reuses_completed_runs(engine, make_run):
    spec = StudySpec(BASE, {"bn_conv_2": (True, False)}, "full", seeds=2)
    outside = spec.runs()[1][1]  # (bn_conv_2=on, seed 1) done before the study, outside it
    make_run(outside, "completed", test_accuracy=0.5)
    study_id, queued = studies.create(engine, spec, "reuse")
    assert len(queued) == 3
    view = studies.load(engine, study_id)
    grid = studies.grid(engine, view).set_index("cell")
    assert grid.loc["bn_conv_2=on", "seed 1"] == "completed"
    assert (grid.loc["bn_conv_2=off"][["seed 0", "seed 1"]] == "queued").all()
    assert studies.fill_missing(engine, study_id) == []  # nothing new while runs are queued
    lifecycle.finish(engine, queued[0], "failed", error="boom")
    assert studies.fill_missing(engine, study_id) == []  # failed is not missing
    again = studies.rerun_failed(engine, study_id)
    assert len(again) == 1
    assert find_run(engine, again[0]).config_hash == find_run(engine, queued[0]).config_hash


# --- statistics with known answers ----------------------------------------------------------
def test_t_quantiles():
    assert analysis.t975(2) == 4.303 and analysis.t975(30) == 2.042
    assert analysis.t975(100) == pytest.approx(1.984, abs=0.001)
    assert analysis.t975(2.5) == pytest.approx((4.303 + 3.182) / 2)


def test_paired_difference_by_hand():
    diffs = [-0.05, -0.04, -0.08]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    est = analysis.paired_difference(diffs)
    assert est.value == pytest.approx(mean)
    assert est.low == pytest.approx(mean - 4.303 * sd / math.sqrt(3))
    assert est.high == pytest.approx(mean + 4.303 * sd / math.sqrt(3))
    assert est.high < 0 and est.verdict == "beyond noise"


def test_welch_difference_by_hand():
    a, b = [0.70, 0.72, 0.74, 0.71], [0.60, 0.75, 0.69]
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    half = analysis.t975(df) * math.sqrt(va + vb)
    est = analysis.welch_difference(a, b)
    assert est.value == pytest.approx(np.mean(b) - np.mean(a))
    assert (est.low, est.high) == pytest.approx((est.value - half, est.value + half))
    assert not est.paired and est.verdict == "within noise"


def two_by_two() -> pd.DataFrame:
    """bn on->off costs 0.10, dropout 0.5->0 adds 0.02, seed noise s*0.01, no interaction."""
    rows = []
    for bn in (True, False):
        for dropout in (0.5, 0.0):
            for seed in range(3):
                acc = 0.8 - (0 if bn else 0.10) + (0.02 if dropout == 0.0 else 0) + 0.01 * seed
                rows.append({"cell": f"{bn}-{dropout}", "seed": seed, "bn_conv_2": bn,
                             "dropout": dropout, "final_val_accuracy": acc})
    return pd.DataFrame(rows)


def test_main_effects_paired_by_seed_sorted_by_size():
    effects = analysis.main_effects(two_by_two(), {"bn_conv_2": (True, False),
                                                   "dropout": (0.5, 0.0)},
                                    {"bn_conv_2": True, "dropout": 0.5})
    assert list(effects["factor"]) == ["bn_conv_2", "dropout"]
    assert effects.loc[0, "effect"] == pytest.approx(-0.10)
    assert effects.loc[1, "effect"] == pytest.approx(0.02)
    assert effects.loc[0, "n"] == 6 and effects["paired"].all()
    words = analysis.plain_words(effects)
    assert "bn_conv_2 (on → off)** lowered" in words and "by 10.0 points" in words


def test_interaction_is_zero_when_effects_add():
    table, est = analysis.interaction(two_by_two(), "bn_conv_2", "dropout")
    assert table.shape == (2, 2)
    assert est.value == pytest.approx(0.0, abs=1e-12)


def test_cell_summary_interval():
    runs = pd.DataFrame({"cell": ["a"] * 3, "seed": [0, 1, 2],
                         "final_val_accuracy": [0.70, 0.72, 0.74],
                         "best_val_accuracy": [0.71, 0.73, 0.75], "test_accuracy": [0.7] * 3})
    row = analysis.cell_summary(runs, ["a", "b"]).set_index("cell")
    assert row.loc["a", "final_val_accuracy_mean"] == pytest.approx(0.72)
    assert row.loc["a", "final_val_accuracy_ci_high"] == pytest.approx(0.72 + 4.303 * 0.02 / 3 ** 0.5)
    assert row.loc["b", "n"] == 0 and math.isnan(row.loc["b", "final_val_accuracy_mean"])


# --- a real small study ---------------------------------------------------------------------
@pytest.mark.slow
def test_small_real_study_runs_to_the_end_with_summary_and_effects(engine, home):
    from streamlit.testing.v1 import AppTest

    spec = StudySpec(BASE, {"bn_conv_2": (True, False), "dropout": (0.5, 0.0)}, "full", seeds=2)
    study_id, queued = studies.create(engine, spec, "tiny real study")
    assert len(queued) == 8
    env = {**os.environ, "ABLATION_HOME": str(home), "ABLATION_HEARTBEAT_SECONDS": "2"}
    worker = subprocess.run([sys.executable, "-m", "cnn_ablation", "worker", "--once", "--gpus",
                             "none"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert worker.returncode == 0, worker.stdout[-2000:]
    view = studies.load(engine, study_id)
    assert int(studies.grid(engine, view)["done"].sum()) == 8
    result = studies.results(engine, view)
    assert (result["summary"]["n"] == 2).all()
    assert result["summary"]["final_val_accuracy_mean"].notna().all()
    assert set(result["effects"]["factor"]) == {"bn_conv_2", "dropout"}
    assert result["effects"]["n"].tolist() == [4, 4] and result["effects"]["paired"].all()
    stats = layer_stats_frame(engine, result["completed"]["run_id"].tolist())
    assert len(stats) == 8 * 6  # every run, every weighted layer, its one epoch

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("cnn_ablation/ui/studies.py").run()
    assert not at.exception, at.exception
    grid, summary, effects = (frame.value for frame in at.dataframe[:3])  # in page order
    assert list(grid["done"]) == [2, 2, 2, 2]
    assert list(summary["runs"]) == [2, 2, 2, 2]
    assert set(effects["factor"]) == {"bn_conv_2", "dropout"}
    assert any("noise" in m.value for m in at.markdown)


def test_time_estimate_scales_with_training_images_of_finished_runs(engine, make_run):
    config = RunConfig(dataset="synthetic", epochs=2, val_split=0.0)  # 2 x 1000 images
    make_run(config, "completed", started_at=1000.0, finished_at=1020.0)  # 10 ms per image
    spec = StudySpec(config.with_changes(limit_train=500), {"dropout": (0.25, 0.5)}, "full", 3)
    seconds, basis = studies.estimate_seconds(engine, spec)
    assert seconds == pytest.approx(6 * 2 * 500 * 0.010)  # 6 runs x 2 epochs x 500 images
    assert "10.00 ms per training image" in basis
