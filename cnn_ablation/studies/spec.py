"""`StudySpec`: an ablation study as factors x levels x seeds over a base `RunConfig` (its cells,
their labels and configs, the base cell, its runs, as JSON), and `StudyView`, a stored study.
Factors and levels as typed are `factors`; checking them and building a cell's config is
`chapter_network` or `own_network`; the adaptive-seeds rule is `adaptive_rule`, the ready-made
studies `presets`."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from cnn_ablation.architecture import PRESETS
from cnn_ablation.config import METRICS, ConfigError, RunConfig, check_seed_count
from cnn_ablation.settings import settings
from cnn_ablation.studies.adaptive_rule import AdaptiveRule
from cnn_ablation.studies.chapter_network import apply_switches, chapter_factors
from cnn_ablation.studies.factors import layer_factor, level_text
from cnn_ablation.studies.own_network import apply_layers, network_factors

DEFAULT_SMALLEST_EFFECT = 0.01  # 1 pp: "seeds needed" and "inconclusive" are for this change


@dataclass(frozen=True)
class Cell:
    """One combination of factor levels: its label, its config (seed 0) and its factor levels.
    `extra`: a named cell (`StudySpec.extra_cells`), not one of the design's combinations."""

    label: str
    config: RunConfig
    levels: dict[str, Any]
    extra: bool = False


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

    Fixed when the study is created, before any result is seen: `metric`, the primary metric
    its verdicts are for (others can be looked at, labelled exploratory; default final
    validation accuracy, or test accuracy when there is no validation split), and
    `smallest_effect`, the smallest change that matters (a fraction: 0.01 = 1 pp): an interval
    that holds zero but reaches past it is "inconclusive", not "within noise".
    """

    base: RunConfig
    factors: dict[str, tuple] = field(default_factory=dict)
    design: str = "full"
    seeds: int = 3
    extra_cells: tuple[tuple[str, dict[str, Any]], ...] = ()
    adaptive: AdaptiveRule | None = None
    metric: str = ""
    smallest_effect: float = DEFAULT_SMALLEST_EFFECT

    def __post_init__(self) -> None:
        if self.design not in ("full", "ofat"):
            raise ConfigError("design", self.design, "full | ofat")
        check_seed_count(self.seeds)
        custom = self.base.network is not None
        clean = (network_factors(self.base, self.factors) if custom
                 else chapter_factors(self.base, self.factors))
        object.__setattr__(self, "factors", clean)
        if not clean and not self.extra_cells:
            raise ConfigError("factors", {}, "at least one factor, or named cells")
        if self.adaptive is not None and self.adaptive.max_seeds < self.seeds:
            raise ConfigError("max seeds", self.adaptive.max_seeds,
                              f"a whole number >= the starting seeds per cell ({self.seeds})")
        self._check_size()
        self._check_metric()
        self._check_labels()

    def cell_count(self) -> int:
        """How many cells the design makes, counted without building them (duplicates that
        collapse into one config counted apart: an upper bound)."""
        sizes = [len(levels) for levels in self.factors.values()]
        if not sizes:
            design = 0
        elif self.design == "full":
            design = math.prod(sizes)
        else:
            design = 1 + sum(n - 1 for n in sizes)
        return design + len(self.extra_cells)

    def _check_size(self) -> None:
        """A typo must not queue a day of runs: at most ABLATION_MAX_STUDY_RUNS, checked before
        any cell is built (20 two-level factors are a million cells)."""
        limit = settings().max_study_runs
        seeds = self.adaptive.max_seeds if self.adaptive else self.seeds
        cells = self.cell_count()
        if cells * seeds > limit:
            raise ConfigError("factors", f"{cells:,} cells x {seeds} seeds = {cells * seeds:,} runs",
                              f"a study of at most {limit:,} runs (ABLATION_MAX_STUDY_RUNS)")

    def check_new(self) -> None:
        """What a new study must satisfy beyond what a stored one must (ConfigError naming the
        field): adaptive seeds start from at least 2, and the primary metric has values."""
        if self.adaptive is not None and self.seeds < 2:
            raise ConfigError("seeds per cell", self.seeds, "at least 2 with adaptive seeds "
                              "(the first round's spread decides how many more; 3 or more "
                              "plan better)")
        if self.base.val_split == 0 and self.metric != "test_accuracy":
            raise ConfigError("metric", self.metric, "test_accuracy: with validation split 0 "
                              "no run has a validation accuracy")

    def _check_metric(self) -> None:
        metric = self.metric or (self.adaptive.metric if self.adaptive else "") or (
            "test_accuracy" if self.base.val_split == 0 else "final_val_accuracy")
        if metric not in METRICS:
            raise ConfigError("metric", metric, " | ".join(METRICS))
        if self.adaptive is not None and self.adaptive.metric != metric:
            object.__setattr__(self, "adaptive", replace(self.adaptive, metric=metric))
        object.__setattr__(self, "metric", metric)
        e = self.smallest_effect
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e < 1:
            shown = round(100 * e, 9) if isinstance(e, (int, float)) else e
            raise ConfigError("smallest effect that matters (pp)", shown,
                              "a number > 0 and < 100")
        object.__setattr__(self, "smallest_effect", float(e))

    def _check_labels(self) -> None:
        """Every cell is told apart by its label: a named cell may not repeat another's."""
        seen: set[str] = set()
        for label, _ in self.extra_cells:
            if not isinstance(label, str) or not label.strip():
                raise ConfigError("cell name", label, "a non-empty name")
            if label in seen:
                raise ConfigError("cell name", label, "a name no other cell has")
            seen.add(label)
        clash = seen & {c.label for c in self.cells() if not c.extra}
        if clash:
            raise ConfigError("cell name", sorted(clash)[0], "a name no other cell has")

    # --- expansion ------------------------------------------------------------------------------
    def _apply(self, overrides: dict[str, Any]) -> RunConfig:
        if self.base.network is not None:
            return apply_layers(self.base, overrides)
        return apply_switches(self.base, overrides)

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
                "adaptive": self.adaptive.to_dict() if self.adaptive else None,
                "metric": self.metric, "smallest_effect": self.smallest_effect}

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
                   else None, metric=data.get("metric", ""),
                   smallest_effect=data.get("smallest_effect", DEFAULT_SMALLEST_EFFECT))


@dataclass(frozen=True)
class StudyView:
    id: int
    name: str
    spec: StudySpec
    spec_json: str = ""  # as stored: what an adaptive round's update is conditional on
