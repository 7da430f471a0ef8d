"""`RunConfig`: the one description of an ablation variant, stored whole on every run.

Defaults are the chapter's recipe (shared/seed): every BatchNorm on, dropout 0.5, Adam at 0.0005,
batch 32, 10 epochs. Validation happens here, at the boundary: a bad value raises `ConfigError`
naming the field, the value given and what is allowed, before anything is queued.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from cnn_ablation.architecture import PRESETS
from cnn_ablation.settings import settings

BUILTIN_DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "synthetic")
NETWORK_KEY = re.compile(r"^(file:[A-Za-z0-9][A-Za-z0-9_.-]*|builder:[A-Za-z_]\w*:[A-Za-z_]\w*)"
                         r"@[0-9a-f]{12}$")
LAYER_NAME = re.compile(r"^[A-Za-z0-9_./-]{1,120}$")
MAX_SEEDS = 50  # seeds per variant or study cell: enough for a tight interval, bounded queue
MAX_SEED = 2**32 - 1  # NumPy's and TensorFlow's seeds are unsigned 32-bit
MAX_NAME = 200  # characters in a run or study name
MAX_SYNTHETIC = 1_000_000  # synthetic:N images (32x32x3 uint8: 3 GB at most, generated in memory)
MAX_LEARNING_RATE = 10.0  # Adam's steps past this diverge at once: a typo, not a setting
MAX_BATCH_SIZE = 65_536  # past the largest training set anyone gives this network: a typo
MIN_IMAGE_SIDE = 4
# What a study can be judged on: one number per run, with its label in tables and plots.
# "best": the highest validation accuracy over epochs, the epoch chosen after seeing it, so it
# reads high (optimistic); the final epoch's and the test set's are not chosen that way.
METRICS = {"final_val_accuracy": "final val acc",
           "best_val_accuracy": "best val acc (optimistic)",
           "test_accuracy": "test acc"}


DEFAULT_DROPOUT = 0.5


def new_run_problems(config: RunConfig) -> list[ConfigError]:
    """What a new run may not ask for although a stored run that has it still loads (so these
    are checked when a run is queued, not by RunConfig): a learning rate over MAX_LEARNING_RATE,
    a batch size over MAX_BATCH_SIZE."""
    found = []
    if config.learning_rate > MAX_LEARNING_RATE:
        found.append(ConfigError("learning_rate", config.learning_rate,
                                 f"a number > 0 and <= {MAX_LEARNING_RATE:g}"))
    if config.batch_size > MAX_BATCH_SIZE:
        found.append(ConfigError("batch_size", config.batch_size,
                                 f"a whole number from 1 to {MAX_BATCH_SIZE:,}"))
    return found


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
    dropout: float = DEFAULT_DROPOUT  # the chapter's Dropout(rate=0.5) after dense_1
    epochs: int = 10  # the chapter trains for 10 epochs
    batch_size: int = 32  # the chapter's batch size
    learning_rate: float = 0.0005  # the chapter's Adam(learning_rate=0.0005)
    seed: int = 0  # seeds weights, shuffling and the validation split
    val_split: float = 0.1  # fraction of the training images held out for val_* curves
    limit_train: int | None = None  # use only the first N training images (quick runs)
    image_size: tuple[int, int] | None = None  # folder: datasets only, (height, width) to resize to
    # Your own network (cnn_ablation/networks/registry.py): its key with content hash, the BatchNorm
    # layers switched off (by name), and each Dropout layer's rate. Unset for the presets.
    network: str | None = None
    bn_off: tuple[str, ...] = ()
    layer_dropout: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        self._check_network()
        if self.network is not None:
            return self._check_common()
        if self.preset not in PRESETS:
            raise ConfigError("preset", self.preset, " | ".join(PRESETS))
        if self.bn_off or self.layer_dropout:
            raise ConfigError("bn_off" if self.bn_off else "layer_dropout",
                              self.bn_off or self.layer_dropout,
                              "nothing for a preset (use bn and dropout); these name the layers "
                              "of your own network (network)")
        positions = PRESETS[self.preset].bn_positions
        given = _default_bn(self.preset) if self.bn is None else self.bn
        bn = parse_bn(given, self.preset) if isinstance(given, str) else tuple(given)
        if len(bn) != len(positions) or not all(v in (0, 1, True, False) for v in bn):
            allowed = (
                f"{len(positions)} values of 0/1, one per BN position ({','.join(positions)})"
                if positions
                else "nothing: this preset has no BatchNorm positions"
            )
            raise ConfigError("bn", ",".join(str(int(v)) for v in bn) if bn else bn, allowed)
        object.__setattr__(self, "bn", tuple(bool(v) for v in bn))
        self._check_common()

    def _check_network(self) -> None:
        if self.network is None:
            return
        if not isinstance(self.network, str) or not NETWORK_KEY.match(self.network):
            raise ConfigError("network", self.network,
                              "a preset name, or file:NAME@HASH / builder:MODULE:FUNC@HASH")
        object.__setattr__(self, "preset", "custom")
        object.__setattr__(self, "bn", ())
        if self.dropout != DEFAULT_DROPOUT:
            raise ConfigError("dropout", self.dropout, "nothing with your own network: each "
                              "Dropout layer's rate is given by name (layer_dropout)")
        names = tuple(self.bn_off)
        if not all(isinstance(n, str) and LAYER_NAME.match(n) for n in names):
            raise ConfigError("bn_off", ",".join(map(str, names)), "layer names of the network")
        object.__setattr__(self, "bn_off", tuple(sorted(set(names))))
        rates = []
        for item in self.layer_dropout:
            name, rate = item
            if not (isinstance(name, str) and LAYER_NAME.match(name)) or not _is_number(rate) \
                    or not 0 <= rate < 1:
                raise ConfigError("layer_dropout", f"{name}={rate}",
                                  "LAYER=RATE with a Dropout layer's name and a rate in [0, 1)")
            rates.append((name, float(rate)))
        object.__setattr__(self, "layer_dropout", tuple(sorted(dict(rates).items())))

    def _check_common(self) -> None:
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
            if not size.isdigit() or not 10 <= int(size) <= MAX_SYNTHETIC:
                raise ConfigError("dataset", self.dataset,
                                  f"synthetic:N with 10 <= N <= {MAX_SYNTHETIC:,} images")
        self._check_number("dropout", self.dropout, 0.0, 1.0, "a number in [0, 1)", float)
        max_epochs = settings().max_epochs
        self._check_int("epochs", self.epochs, 1,
                        f"a whole number >= 1 and <= {max_epochs} (ABLATION_MAX_EPOCHS)", max_epochs)
        self._check_int("batch_size", self.batch_size, 1, "a whole number >= 1")
        if not _is_number(self.learning_rate) or not (0 < self.learning_rate < math.inf):
            raise ConfigError("learning_rate", self.learning_rate, "a number > 0")
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        self._check_int("seed", self.seed, 0, f"a whole number >= 0 and <= {MAX_SEED}", MAX_SEED)
        self._check_number("val_split", self.val_split, 0.0, 1.0, "a number in [0, 1)", float)
        if self.limit_train is not None:
            self._check_int("limit_train", self.limit_train, 1, "a whole number >= 1, or none")
        if self.image_size is not None:
            self._check_image_size()

    def _check_number(self, name, value, low, high, allowed, kind) -> None:
        if not _is_number(value) or not (low <= value < high):
            raise ConfigError(name, value, allowed)
        object.__setattr__(self, name, kind(value))

    def _check_int(self, name, value, low, allowed, high=None) -> None:
        if (isinstance(value, bool) or not isinstance(value, int) or value < low
                or (high is not None and value > high)):
            raise ConfigError(name, value, allowed)

    def _check_image_size(self) -> None:
        """(height, width) to resize a folder dataset to; nothing else has a size to choose."""
        if not self.dataset.startswith("folder:"):
            raise ConfigError("image_size", self.image_size,
                              "none: only folder:<path> datasets can be resized")
        side = settings().max_image_side
        allowed = f"two whole numbers from {MIN_IMAGE_SIDE} to {side} (ABLATION_MAX_IMAGE_SIDE)"
        try:
            dims = tuple(self.image_size)  # type: ignore[arg-type]
        except TypeError:
            raise ConfigError("image_size", self.image_size, allowed) from None
        if len(dims) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and MIN_IMAGE_SIDE <= v <= side
                for v in dims):
            raise ConfigError("image_size", self.image_size, allowed)
        object.__setattr__(self, "image_size", dims)

    @property
    def switches(self) -> tuple[bool, ...]:
        """The BatchNorm switches, one per position (never None once constructed)."""
        assert self.bn is not None
        return self.bn

    # --- identity -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bn"] = [int(v) for v in self.switches]
        if self.image_size is not None:
            data["image_size"] = list(self.image_size)
        if self.network is None:  # the presets' configs (and hashes) are as they always were
            for key in ("network", "bn_off", "layer_dropout"):
                data.pop(key)
        else:  # no single dropout: every Dropout layer's rate by name (filled in by `prepare`)
            data.pop("dropout")
            data["bn_off"] = list(self.bn_off)
            data["layer_dropout"] = [[name, rate] for name, rate in self.layer_dropout]
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
        if data.get("bn_off") is not None:
            data["bn_off"] = tuple(data["bn_off"])
        if data.get("layer_dropout") is not None:
            data["layer_dropout"] = tuple(tuple(item) for item in data["layer_dropout"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))

    @property
    def config_hash(self) -> str:
        """Stable across processes and versions: the same variant and seed give the same hash.
        Computed once per (immutable) config: studies and pages ask for it many times."""
        memo = self.__dict__.get("_config_hash")
        if memo is None:
            memo = self.__dict__["_config_hash"] = hashlib.sha256(
                self.to_json().encode()).hexdigest()[:16]
        return memo

    @property
    def variant_hash(self) -> str:
        """Like `config_hash` but ignoring the seed: repeats of one variant share it."""
        data = self.to_dict()
        data.pop("seed")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """Short human label, e.g. `BN 1·1·0·0·1 · drop 0.5`, or for your own network
        `resnet · BN off bn_2 · dropout_1 0.3`."""
        if self.network is not None:
            name = self.network.split(":", 1)[1].rsplit("@", 1)[0].replace(":", ".")
            parts = [name, "BN off " + ",".join(self.bn_off) if self.bn_off else "all BN on"]
            parts += [f"{layer} {rate:g}" for layer, rate in self.layer_dropout]
            return " · ".join(parts)
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


def defaults() -> RunConfig:
    """The chapter's recipe as field defaults, not validated: a form or a parser shows them even
    where a configured limit (ABLATION_MAX_EPOCHS) refuses one, and says so when it is used."""
    config = object.__new__(RunConfig)
    for f in fields(RunConfig):
        object.__setattr__(config, f.name, f.default)
    return config


def check_name(name: object, field_name: str = "name") -> str:
    """A run's or study's name: text of at most MAX_NAME printable characters (no control
    characters such as escape, newline, tab or NUL), or empty."""
    if not isinstance(name, str) or len(name) > MAX_NAME or not name.isprintable():
        shown = f"{name[:40]}... ({len(name)} characters)" \
            if isinstance(name, str) and len(name) > MAX_NAME else name
        raise ConfigError(field_name, shown,
                          f"text of at most {MAX_NAME} printable characters (no control characters)")
    return name


def check_seed_count(seeds: object) -> int:
    """The number of seeds per variant or cell: a whole number from 1 to MAX_SEEDS."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError("seeds", seeds, f"a whole number from 1 to {MAX_SEEDS}")
    return seeds


def config_diff(configs: list[RunConfig]) -> list[str]:
    """Names of the fields whose values are not all equal across `configs`."""
    dicts = [c.to_dict() for c in configs]
    return [key for key in dicts[0] if len({json.dumps(d[key]) for d in dicts}) > 1] if dicts else []
