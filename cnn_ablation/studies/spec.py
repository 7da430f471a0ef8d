"""`StudySpec`: an ablation study as factors x levels x seeds over a base `RunConfig`, its
optional adaptive-seeds rule (`AdaptiveRule`), and the ready-made studies. Levels are parsed here
for the CLI and the Studies page alike."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from cnn_ablation.architecture import PRESETS
from cnn_ablation.config import (
    LAYER_NAME,
    MAX_SEEDS,
    METRICS,
    ConfigError,
    RunConfig,
    check_seed_count,
)

NUMERIC_FACTORS = {  # factor -> (type of its levels, what is allowed), for messages
    "dropout": (float, "numbers in [0, 1)"),
    "learning_rate": (float, "numbers > 0"),
    "batch_size": (int, "whole numbers >= 1"),
}
# Your own network's factors name its layers: `bn:LAYER` (a BatchNormalization layer, on/off)
# and `dropout:LAYER` (a Dropout layer's rate, numeric levels). Layer names never hold a colon.
NETWORK_FACTORS = "bn:<BatchNorm layer> | dropout:<Dropout layer>=r1,r2,... | learning_rate | " \
                  "batch_size"


def layer_factor(name: str) -> tuple[str, str] | None:
    """`bn:b1_bn` -> ("bn", "b1_bn"), `dropout:head` -> ("dropout", "head"); None for the
    chapter's factors (`bn_conv_3`, `dropout`, ...)."""
    kind, colon, layer = name.partition(":")
    return (kind, layer) if colon and kind in ("bn", "dropout") else None


def _numeric(factor: str) -> tuple[type, str] | None:
    if factor in NUMERIC_FACTORS:
        return NUMERIC_FACTORS[factor]
    layer = layer_factor(factor)
    return NUMERIC_FACTORS["dropout"] if layer and layer[0] == "dropout" else None


def parse_levels(factor: str, text: str) -> tuple:
    """`"0, 0.25, 0.5"` -> the levels of a numeric factor (`dropout`, `dropout:LAYER`, ...);
    ConfigError naming the factor if not."""
    numeric = _numeric(factor)
    assert numeric is not None, factor
    kind, allowed = numeric
    try:
        return tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{factor} levels", text, f"{allowed} separated by commas") from None


def parse_factor(text: str) -> tuple[str, tuple]:
    """A factor as written on the command line: `bn_conv_3` -> on/off; `dropout=0,0.25` ->
    numeric levels; for your own network `bn:LAYER` -> on/off and `dropout:LAYER=0.1,0.3` ->
    that Dropout layer's rates. The factor's name itself is checked by StudySpec."""
    name, equals, values = text.partition("=")
    layer = layer_factor(name)
    allowed = ("bn_<position> | " + " | ".join(f"{f}=v1,v2,..." for f in NUMERIC_FACTORS)
               + "; your own network: " + NETWORK_FACTORS)
    if not equals:
        if layer and layer[0] == "dropout":
            raise ConfigError("factor", text, "dropout:LAYER=r1,r2,... (the Dropout layer's "
                              "rates, e.g. dropout:head_drop=0.1,0.3)")
        return name, (True, False)
    if _numeric(name) is None:
        raise ConfigError("factor", text, allowed)
    return name, parse_levels(name, values)


@dataclass(frozen=True)
class Cell:
    """One combination of factor levels: its label, its config (seed 0) and its factor levels.
    `extra`: a named cell (`StudySpec.extra_cells`), not one of the design's combinations."""

    label: str
    config: RunConfig
    levels: dict[str, Any]
    extra: bool = False


@dataclass(frozen=True)
class AdaptiveRule:
    """Adaptive seeds: add `step` seeds per cell, a round at a time, until every effect's 95 %
    interval has a half-width below `half_width` (a fraction of accuracy: 0.01 = 1 pp) on
    `metric`, or every cell has `max_seeds` seeds. The rule stops on precision only, never on
    significance: stopping once an interval excludes zero would inflate false positives.

    Its state lives here too, stored with the study: `history` holds (seeds per cell, widest
    half-width) at the end of each finished round; `stopped` says why it stopped ("" while it
    goes on)."""

    half_width: float
    max_seeds: int
    step: int = 1
    metric: str = "final_val_accuracy"
    stopped: str = ""
    history: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        hw = self.half_width
        if isinstance(hw, bool) or not isinstance(hw, (int, float)) or not math.isfinite(hw) \
                or not 0 < hw < 1:
            shown = round(100 * hw, 9) if isinstance(hw, (int, float)) else hw
            raise ConfigError("target half-width (pp)", shown, "a number > 0 and < 100")
        object.__setattr__(self, "half_width", float(hw))
        for name, value, low in (("max seeds", self.max_seeds, 2), ("seed step", self.step, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_SEEDS:
                raise ConfigError(name, value, f"a whole number from {low} to {MAX_SEEDS}")
        if self.metric not in METRICS:
            raise ConfigError("metric", self.metric, " | ".join(METRICS))
        object.__setattr__(self, "history", tuple((int(s), float(w)) for s, w in self.history))

    @property
    def round(self) -> int:
        """The round now running (1 = the first seeds), or the last one once stopped."""
        return max(len(self.history), 1) if self.stopped else len(self.history) + 1

    def text(self) -> str:
        """The rule in one line, as the page and `study show` state it."""
        return (f"add {self.step} seed(s) per cell a round at a time until every effect's 95 % "
                f"interval is narrower than ±{100 * self.half_width:g} pp on "
                f"{METRICS[self.metric]}, or {self.max_seeds} seeds per cell")

    def to_dict(self) -> dict[str, Any]:
        return {"half_width": self.half_width, "max_seeds": self.max_seeds, "step": self.step,
                "metric": self.metric, "stopped": self.stopped,
                "history": [[s, None if math.isnan(w) else w] for s, w in self.history]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdaptiveRule:
        return cls(half_width=data["half_width"], max_seeds=data["max_seeds"],
                   step=data.get("step", 1), metric=data.get("metric", "final_val_accuracy"),
                   stopped=data.get("stopped", ""),
                   history=tuple((s, math.nan if w is None else w)
                                 for s, w in data.get("history", [])))


@dataclass(frozen=True)
class StudySpec:
    """An ablation study: a base config, factors with levels, a design, and seeds per cell.

    Factors are `bn_<position>` (levels on/off, e.g. `bn_conv_3`), `dropout`, `learning_rate`,
    `batch_size`; with your own network (`base.network`) `bn:LAYER` (on/off), `dropout:LAYER`
    (that Dropout layer's rates), `learning_rate`, `batch_size`. Designs: `full` (every
    combination), `ofat` (the base, then each factor's other levels one at a time).
    `extra_cells` adds named cells given as config overrides (e.g. "all BatchNorm off"). Each
    cell runs with seeds 0..seeds-1; with an `adaptive` rule `seeds` is the number asked for so
    far, and grows a round at a time (`cnn_ablation.studies.rounds.advance`).
    """

    base: RunConfig
    factors: dict[str, tuple] = field(default_factory=dict)
    design: str = "full"
    seeds: int = 3
    extra_cells: tuple[tuple[str, dict[str, Any]], ...] = ()
    adaptive: AdaptiveRule | None = None

    def __post_init__(self) -> None:
        if self.design not in ("full", "ofat"):
            raise ConfigError("design", self.design, "full | ofat")
        check_seed_count(self.seeds)
        custom = self.base.network is not None
        clean = self._network_factors() if custom else self._chapter_factors()
        object.__setattr__(self, "factors", clean)
        if not clean and not self.extra_cells:
            raise ConfigError("factors", {}, "at least one factor, or named cells")
        if self.adaptive is not None and self.adaptive.max_seeds < self.seeds:
            raise ConfigError("max seeds", self.adaptive.max_seeds,
                              f"a whole number >= the starting seeds per cell ({self.seeds})")

    def _chapter_factors(self) -> dict[str, tuple]:
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
                if layer_factor(name):
                    allowed += " (bn:LAYER and dropout:LAYER name the layers of your own network)"
                raise ConfigError("factor", name, allowed)
            clean[name] = self._distinct(name, levels)
        return clean

    def _network_factors(self) -> dict[str, tuple]:
        """Your own network's factors: `bn:LAYER` (on/off), `dropout:LAYER` (rates), learning
        rate and batch size. Only the names' form is checked here (no Keras); whether the network
        has those layers is `check_layers` (studies.create asks the probe)."""
        clean: dict[str, tuple] = {}
        for name, levels in self.factors.items():
            layer = layer_factor(name)
            if layer and LAYER_NAME.match(layer[1]) and layer[0] == "bn":
                levels = tuple(levels or (True, False))
                if not all(v in (True, False, 0, 1) for v in levels):
                    raise ConfigError(name, list(levels), "on/off (true/false)")
                levels = tuple(bool(v) for v in levels)
            elif layer and LAYER_NAME.match(layer[1]):
                levels = tuple(levels)
                for value in levels:
                    if isinstance(value, bool) or not isinstance(value, (int, float)) \
                            or not 0 <= value < 1:
                        raise ConfigError(name, value, "Dropout rates: numbers in [0, 1)")
                levels = tuple(float(v) for v in levels)
            elif name in ("learning_rate", "batch_size"):
                levels = tuple(levels)
                for value in levels:
                    self.base.with_changes(**{name: value})
            else:
                raise ConfigError("factor", name, NETWORK_FACTORS)
            clean[name] = self._distinct(name, levels)
        return clean

    @staticmethod
    def _distinct(name: str, levels: tuple) -> tuple:
        if len(set(levels)) < 2:
            raise ConfigError(name, list(levels), "at least two different levels")
        return tuple(dict.fromkeys(levels))

    def check_layers(self, batchnorm: list[str], dropout: list[str]) -> None:
        """Refuse a factor naming a layer your network does not have (field `factor`, with the
        layers it has). `batchnorm`, `dropout`: the network's layer names, as Keras found them."""
        for name in self.factors:
            layer = layer_factor(name)
            if layer is None:
                continue
            kind, layer_name = layer
            have = batchnorm if kind == "bn" else dropout
            if layer_name not in have:
                what = "BatchNorm" if kind == "bn" else "Dropout"
                raise ConfigError("factor", name, f"{kind}:<{what} layer> of this network: "
                                  + (", ".join(f"{kind}:{n}" for n in have)
                                     or f"it has no {what} layer"))

    # --- expansion ------------------------------------------------------------------------------
    def _apply(self, overrides: dict[str, Any]) -> RunConfig:
        if self.base.network is not None:
            return self._apply_layers(overrides)
        changes = {k: v for k, v in overrides.items() if not k.startswith("bn_")}
        if any(k.startswith("bn_") for k in overrides):
            positions = PRESETS[self.base.preset].bn_positions
            bn = list(changes.pop("bn", self.base.bn))
            for k, v in overrides.items():
                if k.startswith("bn_"):
                    bn[positions.index(k[3:])] = bool(v)
            changes["bn"] = tuple(bn)
        return self.base.with_changes(**changes)

    def _apply_layers(self, overrides: dict[str, Any]) -> RunConfig:
        """Your own network's cell: the base's switched-off BatchNorms and Dropout rates, with
        the cell's `bn:LAYER` and `dropout:LAYER` levels applied."""
        changes = {k: v for k, v in overrides.items() if layer_factor(k) is None}
        off = set(changes.pop("bn_off", self.base.bn_off))
        rates = dict(changes.pop("layer_dropout", self.base.layer_dropout))
        for name, value in overrides.items():
            layer = layer_factor(name)
            if layer is None:
                continue
            kind, layer_name = layer
            if kind == "bn":
                (off.discard if value else off.add)(layer_name)
            else:
                rates[layer_name] = float(value)
        return self.base.with_changes(bn_off=tuple(sorted(off)),
                                      layer_dropout=tuple(sorted(rates.items())), **changes)

    def level_of(self, config: RunConfig, factor: str) -> Any:
        """The factor's level in `config`. A Dropout layer the config leaves at its saved rate
        has the level None (the network's own rate, unknown without Keras)."""
        layer = layer_factor(factor) if config.network is not None else None
        if layer is not None:
            kind, layer_name = layer
            if kind == "bn":
                return layer_name not in config.bn_off
            return dict(config.layer_dropout).get(layer_name)
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
        # The spec is immutable and a page asks for its cells several times per render (a
        # 96-cell study builds and hashes 96 configs each time): computed once per spec object
        memo = self.__dict__.get("_cells")
        if memo is None:
            memo = self.__dict__["_cells"] = tuple(self._make_cells())
        return list(memo)

    def _make_cells(self) -> list[Cell]:
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
                cells.append(Cell(label, config, {n: self.level_of(config, n) for n in names},
                                  extra=True))
        return cells

    def reference_levels(self) -> dict[str, Any]:
        """Each factor's reference level: the base config's, or its first level when the base's
        is not among the levels. Effects are changes away from these."""
        out = {}
        for name, levels in self.factors.items():
            level = self.level_of(self.base, name)
            out[name] = level if level in levels else levels[0]
        return out

    def base_cell(self) -> Cell:
        """The cell every other cell is compared with: `base` in a one-at-a-time study, the cell at
        the reference levels in a full factorial one; with named cells only, the one equal to the base
        config, else the first."""
        cells = self.cells()
        if self.factors and self.design == "ofat":
            return cells[0]  # `base`: the base config itself
        if self.factors:
            reference = self.reference_levels()
            for cell in cells:
                if not cell.extra and cell.levels == reference:
                    return cell
        base_hash = self.base.with_changes(seed=0).config_hash
        return next((c for c in cells if c.config.config_hash == base_hash), cells[0])

    def interaction_pairs(self) -> list[tuple[str, str]]:
        """Pairs of factors whose interaction the design can estimate: full factorial designs
        only (one-at-a-time lacks the crossed cells), both factors with two levels."""
        if self.design != "full":
            return []
        two = [name for name, levels in self.factors.items() if len(levels) == 2]
        return list(itertools.combinations(two, 2))

    def with_seeds(self, seeds: int) -> StudySpec:
        return replace(self, seeds=seeds)

    def runs(self) -> list[tuple[Cell, RunConfig]]:
        """Every (cell, config with seed) of the study: cells x seeds, no duplicates."""
        memo = self.__dict__.get("_runs")
        if memo is None:
            memo = self.__dict__["_runs"] = tuple(
                (cell, cell.config.with_changes(seed=s)) for cell in self.cells()
                for s in range(self.seeds))
        return list(memo)

    # --- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "design": self.design, "seeds": self.seeds,
                "factors": {k: list(v) for k, v in self.factors.items()},
                "extra_cells": [[label, over] for label, over in self.extra_cells],
                "adaptive": self.adaptive.to_dict() if self.adaptive else None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySpec:
        return cls(base=RunConfig.from_dict(data["base"]), design=data.get("design", "full"),
                   seeds=data.get("seeds", 3),
                   factors={k: tuple(v) for k, v in data.get("factors", {}).items()},
                   extra_cells=tuple((label, dict(over))
                                     for label, over in data.get("extra_cells", [])),
                   adaptive=AdaptiveRule.from_dict(data["adaptive"]) if data.get("adaptive")
                   else None)


def level_text(value: Any) -> str:
    """A factor level as people write it: on/off for switches, 0.25 for numbers."""
    value = value.item() if hasattr(value, "item") else value  # NumPy scalars from frames
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:  # a Dropout layer of your own network at the rate it was saved with
        return "as saved"
    return f"{value:g}" if isinstance(value, float) else str(value)


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


@dataclass(frozen=True)
class StudyView:
    id: int
    name: str
    spec: StudySpec
    spec_json: str = ""  # as stored: what an adaptive round's update is conditional on
