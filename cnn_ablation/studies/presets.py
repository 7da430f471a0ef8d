"""The ready-made studies: the chapter's experiment (all BatchNorm on vs on conv_1 only), BatchNorm
one layer at a time, the dropout sweep; and the chapter's own CIFAR-10 numbers to compare with."""

from __future__ import annotations

from cnn_ablation.architecture import PRESETS
from cnn_ablation.config import ConfigError, RunConfig
from cnn_ablation.studies.adaptive_rule import AdaptiveRule
from cnn_ablation.studies.factors import NETWORK_FACTORS
from cnn_ablation.studies.spec import StudySpec

STUDY_PRESETS = {
    "chapter": "The chapter's experiment: all BatchNorm on vs BatchNorm on conv_1 only",
    "bn_one_at_a_time": "BatchNorm one layer at a time: each position off alone, and all off",
    "dropout_sweep": "Dropout sweep: 0, 0.25, 0.5, 0.75",
}


CHAPTER_TEST_ACCURACY = {"all BN on": 0.7193, "BN on conv_1 only": 0.7057}  # shared/seed, CIFAR-10


def study_preset(name: str, base: RunConfig, seeds: int = 3,
                 adaptive: AdaptiveRule | None = None) -> StudySpec:
    if base.network is not None and name in STUDY_PRESETS:
        raise ConfigError("study preset", name, "none with your own network (the presets are "
                          "the chapter's network's); give factors: " + NETWORK_FACTORS)
    if name == "chapter":
        base = base.with_changes(bn=None, dropout=0.5)
        return StudySpec(base, {}, "full", seeds, (
            ("all BN on", {}), ("BN on conv_1 only", {"bn": (True, False, False, False, False)})),
            adaptive)
    if name == "bn_one_at_a_time":
        positions = PRESETS[base.preset].bn_positions
        return StudySpec(base.with_changes(bn=None), {f"bn_{p}": (True, False) for p in positions},
                         "ofat", seeds, (("all BN off", {"bn": (False,) * len(positions)}),),
                         adaptive)
    if name == "dropout_sweep":
        return StudySpec(base, {"dropout": (0.0, 0.25, 0.5, 0.75)}, "full", seeds, (), adaptive)
    raise ConfigError("preset", name, " | ".join(STUDY_PRESETS))
