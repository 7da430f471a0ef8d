"""A study over the chapter's network: its factors (`bn_<position>` switches of the preset's
BatchNorm positions, and the numeric `dropout`, `learning_rate`, `batch_size`) checked against
the base config, and a cell's levels applied to the base config."""

from __future__ import annotations

from typing import Any

from cnn_ablation.architecture import PRESETS
from cnn_ablation.config import ConfigError, RunConfig
from cnn_ablation.studies.factors import NUMERIC_FACTORS, distinct_levels, layer_factor


def chapter_factors(base: RunConfig, factors: dict[str, tuple]) -> dict[str, tuple]:
    positions = PRESETS[base.preset].bn_positions
    clean: dict[str, tuple] = {}
    for name, levels in factors.items():
        if name.startswith("bn_") and name[3:] in positions:
            levels = tuple(bool(v) for v in (levels or (True, False)))
        elif name in NUMERIC_FACTORS:
            levels = tuple(levels)
            for value in levels:  # each level must make a valid config
                base.with_changes(**{name: value})
        else:
            allowed = ", ".join([f"bn_{p}" for p in positions] + list(NUMERIC_FACTORS))
            if layer_factor(name):
                allowed += " (bn:LAYER and dropout:LAYER name the layers of your own network)"
            raise ConfigError("factor", name, allowed)
        clean[name] = distinct_levels(name, levels)
    return clean


def apply_switches(base: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """The chapter's network's cell: the base config with the cell's `bn_<position>` switches
    set in its `bn` tuple and its other levels (`dropout`, ...) as they are."""
    changes = {k: v for k, v in overrides.items() if not k.startswith("bn_")}
    if any(k.startswith("bn_") for k in overrides):
        positions = PRESETS[base.preset].bn_positions
        bn = list(changes.pop("bn", base.bn))
        for k, v in overrides.items():
            if k.startswith("bn_"):
                bn[positions.index(k[3:])] = bool(v)
        changes["bn"] = tuple(bn)
    return base.with_changes(**changes)
