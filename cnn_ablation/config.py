"""`RunConfig`: the one description of an ablation variant, stored whole on every run.

Defaults are the chapter's recipe (shared/seed): every BatchNorm on, dropout 0.5, Adam at 0.0005,
batch 32, 10 epochs. Validation happens here, at the boundary: a bad value raises `ConfigError`
naming the field, the value given and what is allowed, before anything is queued.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from cnn_ablation.architecture import PRESETS

BUILTIN_DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "synthetic")


class ConfigError(ValueError):
    """A value that is not allowed; the message names the field, the value and what is allowed."""

    def __init__(self, field_name: str, given: Any, allowed: str):
        self.field = field_name
        self.given = given
        self.allowed = allowed
        super().__init__(f"{field_name}: {given!r} is not allowed; allowed: {allowed}")


def _default_bn(preset: str) -> tuple[bool, ...]:
    return (True,) * len(PRESETS[preset].bn_positions)


@dataclass(frozen=True)
class RunConfig:
    preset: str = "seed"  # which of the chapter's networks (architecture.PRESETS)
    dataset: str = "cifar10"  # the chapter's data; see datasets.py for the others
    bn: tuple[bool, ...] | None = None  # one switch per BN position; None -> all on (the chapter)
    dropout: float = 0.5  # the chapter's Dropout(rate=0.5) after dense_1
    epochs: int = 10  # the chapter trains for 10 epochs
    batch_size: int = 32  # the chapter's batch size
    learning_rate: float = 0.0005  # the chapter's Adam(learning_rate=0.0005)
    seed: int = 0  # seeds weights, shuffling and the validation split
    val_split: float = 0.1  # fraction of the training images held out for val_* curves
    limit_train: int | None = None  # use only the first N training images (quick runs)
    image_size: tuple[int, int] | None = None  # folder: datasets only, (height, width) to resize to

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError("preset", self.preset, " | ".join(PRESETS))
        positions = PRESETS[self.preset].bn_positions
        bn = _default_bn(self.preset) if self.bn is None else self.bn
        if isinstance(bn, str):
            bn = parse_bn(bn, self.preset)
        bn = tuple(bn)
        if len(bn) != len(positions) or not all(v in (0, 1, True, False) for v in bn):
            allowed = (
                f"{len(positions)} values of 0/1, one per BN position ({','.join(positions)})"
                if positions
                else "nothing: this preset has no BatchNorm positions"
            )
            raise ConfigError("bn", ",".join(str(int(v)) for v in bn) if bn else bn, allowed)
        object.__setattr__(self, "bn", tuple(bool(v) for v in bn))
        if not isinstance(self.dataset, str) or not (
            self.dataset in BUILTIN_DATASETS
            or self.dataset.startswith("synthetic:")
            or (self.dataset.startswith("folder:") and len(self.dataset) > len("folder:"))
        ):
            raise ConfigError(
                "dataset", self.dataset, " | ".join(BUILTIN_DATASETS) + " | synthetic:N | folder:<path>"
            )
        if self.dataset.startswith("synthetic:"):
            size = self.dataset.split(":", 1)[1]
            if not size.isdigit() or int(size) < 10:
                raise ConfigError("dataset", self.dataset, "synthetic:N with N >= 10 images")
        self._check_number("dropout", self.dropout, 0.0, 1.0, "a number in [0, 1)", float)
        self._check_int("epochs", self.epochs, 1, "a whole number >= 1")
        self._check_int("batch_size", self.batch_size, 1, "a whole number >= 1")
        if not _is_number(self.learning_rate) or not (0 < self.learning_rate < math.inf):
            raise ConfigError("learning_rate", self.learning_rate, "a number > 0")
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        self._check_int("seed", self.seed, 0, "a whole number >= 0")
        self._check_number("val_split", self.val_split, 0.0, 1.0, "a number in [0, 1)", float)
        if self.limit_train is not None:
            self._check_int("limit_train", self.limit_train, 1, "a whole number >= 1, or none")
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(isinstance(v, int) and 4 <= v <= 1024 for v in size):
                raise ConfigError("image_size", self.image_size, "two whole numbers in [4, 1024]")
            object.__setattr__(self, "image_size", size)

    def _check_number(self, name, value, low, high, allowed, kind) -> None:
        if not _is_number(value) or not (low <= value < high):
            raise ConfigError(name, value, allowed)
        object.__setattr__(self, name, kind(value))

    def _check_int(self, name, value, low, allowed) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(name, value, allowed)

    # --- identity -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bn"] = [int(v) for v in self.bn]
        if self.image_size is not None:
            data["image_size"] = list(self.image_size)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], data[unknown[0]], "one of " + ", ".join(sorted(known)))
        data = dict(data)
        if data.get("bn") is not None and not isinstance(data["bn"], str):
            data["bn"] = tuple(data["bn"])
        if data.get("image_size") is not None:
            data["image_size"] = tuple(data["image_size"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))

    @property
    def config_hash(self) -> str:
        """Stable across processes and versions: the same variant and seed give the same hash."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @property
    def variant_hash(self) -> str:
        """Like `config_hash` but ignoring the seed: repeats of one variant share it."""
        data = self.to_dict()
        data.pop("seed")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """Short human label, e.g. `BN 1·1·0·0·1 · drop 0.5`."""
        parts = []
        if self.bn:
            parts.append("BN " + "·".join(str(int(v)) for v in self.bn))
        else:
            parts.append(self.preset)
        if PRESETS[self.preset].has_dropout:
            parts.append(f"drop {self.dropout:g}")
        return " · ".join(parts)

    def with_changes(self, **changes: Any) -> RunConfig:
        return replace(self, **changes)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_bn(text: str, preset: str = "seed") -> tuple[bool, ...]:
    """`"1,0,0,0,1"` -> switches; refuses anything but 0/1 with a message naming `bn`."""
    positions = PRESETS[preset].bn_positions if preset in PRESETS else ()
    allowed = f"{len(positions)} comma-separated 0/1 values ({','.join(positions)})"
    items = [item.strip() for item in text.split(",")] if text.strip() else []
    if any(item not in ("0", "1") for item in items):
        raise ConfigError("bn", text, allowed)
    return tuple(item == "1" for item in items)


def config_diff(configs: list[RunConfig]) -> list[str]:
    """Names of the fields whose values are not all equal across `configs`."""
    dicts = [c.to_dict() for c in configs]
    return [key for key in dicts[0] if len({json.dumps(d[key]) for d in dicts}) > 1] if dicts else []


# --- studies ------------------------------------------------------------------------------------
FACTOR_KINDS = ("bn_<position>", "dropout", "learning_rate", "batch_size")


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
        seeds = self.seeds
        if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 50:
            raise ConfigError("seeds", self.seeds, "a whole number from 1 to 50")
        positions = PRESETS[self.base.preset].bn_positions
        clean: dict[str, tuple] = {}
        for name, levels in self.factors.items():
            if name.startswith("bn_") and name[3:] in positions:
                levels = tuple(bool(v) for v in (levels or (True, False)))
            elif name in ("dropout", "learning_rate", "batch_size"):
                levels = tuple(levels)
                for value in levels:  # each level must make a valid config
                    self.base.with_changes(**{name: value})
            else:
                allowed = ", ".join([f"bn_{p}" for p in positions] +
                                    ["dropout", "learning_rate", "batch_size"])
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
            return config.bn[PRESETS[config.preset].bn_positions.index(factor[3:])]
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
