"""`StudySpec`: an ablation study as factors x levels x seeds over a base `RunConfig`, and the
ready-made studies. Levels are parsed here for the CLI and the Studies page alike."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from cnn_ablation.architecture import PRESETS
from cnn_ablation.config import ConfigError, RunConfig, check_seed_count

NUMERIC_FACTORS = {  # factor -> (type of its levels, what is allowed), for messages
    "dropout": (float, "numbers in [0, 1)"),
    "learning_rate": (float, "numbers > 0"),
    "batch_size": (int, "whole numbers >= 1"),
}


def parse_levels(factor: str, text: str) -> tuple:
    """`"0, 0.25, 0.5"` -> the levels of a numeric factor; ConfigError naming the factor if not."""
    kind, allowed = NUMERIC_FACTORS[factor]
    try:
        return tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{factor} levels", text, f"{allowed} separated by commas") from None


def parse_factor(text: str) -> tuple[str, tuple]:
    """A factor as written on the command line: `bn_conv_3` -> on/off; `dropout=0,0.25` ->
    numeric levels. The factor's name itself is checked by StudySpec."""
    name, equals, values = text.partition("=")
    if not equals:
        return name, (True, False)
    if name not in NUMERIC_FACTORS:
        raise ConfigError("factor", text, "bn_<position> | " +
                          " | ".join(f"{f}=v1,v2,..." for f in NUMERIC_FACTORS))
    return name, parse_levels(name, values)


@dataclass(frozen=True)
class Cell:
    """One combination of factor levels: its label, its config (seed 0) and its factor levels."""

    label: str
    config: RunConfig
    levels: dict[str, Any]


@dataclass(frozen=True)
class StudySpec:
    """An ablation study: a base config, factors with levels, a design, and seeds per cell.

    Factors are `bn_<position>` (levels on/off, e.g. `bn_conv_3`), `dropout`, `learning_rate`,
    `batch_size`. Designs: `full` (every combination), `ofat` (the base, then each factor's other
    levels one at a time). `extra_cells` adds named cells given as config overrides (e.g. "all
    BatchNorm off"). Each cell runs with seeds 0..seeds-1.
    """

    base: RunConfig
    factors: dict[str, tuple] = field(default_factory=dict)
    design: str = "full"
    seeds: int = 3
    extra_cells: tuple[tuple[str, dict[str, Any]], ...] = ()

    def __post_init__(self) -> None:
        if self.design not in ("full", "ofat"):
            raise ConfigError("design", self.design, "full | ofat")
        check_seed_count(self.seeds)
        positions = PRESETS[self.base.preset].bn_positions
        clean: dict[str, tuple] = {}
        for name, levels in self.factors.items():
            if name.startswith("bn_") and name[3:] in positions:
                levels = tuple(bool(v) for v in (levels or (True, False)))
            elif name in NUMERIC_FACTORS:
                levels = tuple(levels)
                for value in levels:  # each level must make a valid config
                    self.base.with_changes(**{name: value})
            else:
                allowed = ", ".join([f"bn_{p}" for p in positions] + list(NUMERIC_FACTORS))
                raise ConfigError("factor", name, allowed)
            if len(set(levels)) < 2:
                raise ConfigError(name, list(levels), "at least two different levels")
            clean[name] = tuple(dict.fromkeys(levels))
        object.__setattr__(self, "factors", clean)
        if not clean and not self.extra_cells:
            raise ConfigError("factors", {}, "at least one factor, or named cells")

    # --- expansion ------------------------------------------------------------------------------
    def _apply(self, overrides: dict[str, Any]) -> RunConfig:
        changes = {k: v for k, v in overrides.items() if not k.startswith("bn_")}
        if any(k.startswith("bn_") for k in overrides):
            positions = PRESETS[self.base.preset].bn_positions
            bn = list(changes.pop("bn", self.base.bn))
            for k, v in overrides.items():
                if k.startswith("bn_"):
                    bn[positions.index(k[3:])] = bool(v)
            changes["bn"] = tuple(bn)
        return self.base.with_changes(**changes)

    def level_of(self, config: RunConfig, factor: str) -> Any:
        if factor.startswith("bn_"):
            return config.switches[PRESETS[config.preset].bn_positions.index(factor[3:])]
        return getattr(config, factor)

    def _label(self, levels: dict[str, Any]) -> str:
        """Full design: every level (`bn_conv_3=off, dropout=0.25`); one-at-a-time: what
        differs from the base, or `base`."""
        shown = [f"{k}={level_text(v)}" for k, v in levels.items()
                 if self.design == "full" or v != self.level_of(self.base, k)]
        return ", ".join(shown) if shown else "base"

    def cells(self) -> list[Cell]:
        names = list(self.factors)
        if not names:
            combos = []  # named cells only
        elif self.design == "full":
            combos = [dict(zip(names, values, strict=True))
                      for values in itertools.product(*self.factors.values())]
        else:
            combos = [{}] + [{name: level} for name in names for level in self.factors[name]
                             if level != self.level_of(self.base, name)]
        cells, seen = [], set()
        for combo in combos:
            config = self._apply(combo).with_changes(seed=0)
            levels = {n: self.level_of(config, n) for n in names}
            if config.config_hash not in seen:
                seen.add(config.config_hash)
                cells.append(Cell(self._label(levels), config, levels))
        for label, overrides in self.extra_cells:
            config = self._apply(overrides).with_changes(seed=0)
            if config.config_hash not in seen:
                seen.add(config.config_hash)
                cells.append(Cell(label, config, {n: self.level_of(config, n) for n in names}))
        return cells

    def runs(self) -> list[tuple[Cell, RunConfig]]:
        """Every (cell, config with seed) of the study: cells x seeds, no duplicates."""
        return [(cell, cell.config.with_changes(seed=s)) for cell in self.cells()
                for s in range(self.seeds)]

    # --- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "design": self.design, "seeds": self.seeds,
                "factors": {k: list(v) for k, v in self.factors.items()},
                "extra_cells": [[label, over] for label, over in self.extra_cells]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySpec:
        return cls(base=RunConfig.from_dict(data["base"]), design=data.get("design", "full"),
                   seeds=data.get("seeds", 3),
                   factors={k: tuple(v) for k, v in data.get("factors", {}).items()},
                   extra_cells=tuple((label, dict(over))
                                     for label, over in data.get("extra_cells", [])))


def level_text(value: Any) -> str:
    """A factor level as people write it: on/off for switches, 0.25 for numbers."""
    value = value.item() if hasattr(value, "item") else value  # NumPy scalars from frames
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


STUDY_PRESETS = {
    "chapter": "The chapter's experiment: all BatchNorm on vs BatchNorm on conv_1 only",
    "bn_one_at_a_time": "BatchNorm one layer at a time: each position off alone, and all off",
    "dropout_sweep": "Dropout sweep: 0, 0.25, 0.5, 0.75",
}
CHAPTER_TEST_ACCURACY = {"all BN on": 0.7193, "BN on conv_1 only": 0.7057}  # shared/seed, CIFAR-10


def study_preset(name: str, base: RunConfig, seeds: int = 3) -> StudySpec:
    if name == "chapter":
        base = base.with_changes(bn=None, dropout=0.5)
        return StudySpec(base, {}, "full", seeds, (
            ("all BN on", {}), ("BN on conv_1 only", {"bn": (True, False, False, False, False)})))
    if name == "bn_one_at_a_time":
        positions = PRESETS[base.preset].bn_positions
        return StudySpec(base.with_changes(bn=None), {f"bn_{p}": (True, False) for p in positions},
                         "ofat", seeds, (("all BN off", {"bn": (False,) * len(positions)}),))
    if name == "dropout_sweep":
        return StudySpec(base, {"dropout": (0.0, 0.25, 0.5, 0.75)}, "full", seeds)
    raise ConfigError("preset", name, " | ".join(STUDY_PRESETS))
