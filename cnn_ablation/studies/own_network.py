"""A study over your own network (`base.network`): its factors name its layers, `bn:LAYER`
(a BatchNormalization layer, on/off) and `dropout:LAYER` (a Dropout layer's rates), beside
`learning_rate` and `batch_size`; their form checked without Keras, the layers checked against
the ones the network has, and a cell's levels applied to the base config."""

from __future__ import annotations

from typing import Any

from cnn_ablation.config import LAYER_NAME, ConfigError, RunConfig
from cnn_ablation.studies.factors import NETWORK_FACTORS, distinct_levels, layer_factor


def network_factors(base: RunConfig, factors: dict[str, tuple]) -> dict[str, tuple]:
    """Your own network's factors: `bn:LAYER` (on/off), `dropout:LAYER` (rates), learning
    rate and batch size. Only the names' form is checked here (no Keras); whether the network
    has those layers is `check_layers` (grid.create asks the probe)."""
    clean: dict[str, tuple] = {}
    for name, levels in factors.items():
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
                base.with_changes(**{name: value})
        else:
            raise ConfigError("factor", name, NETWORK_FACTORS)
        clean[name] = distinct_levels(name, levels)
    return clean


def check_layers(factors: dict[str, tuple], batchnorm: list[str], dropout: list[str]) -> None:
    """Refuse a factor naming a layer your network does not have (field `factor`, with the
    layers it has). `batchnorm`, `dropout`: the network's layer names, as Keras found them."""
    for name in factors:
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


def apply_layers(base: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Your own network's cell: the base's switched-off BatchNorms and Dropout rates, with
    the cell's `bn:LAYER` and `dropout:LAYER` levels applied."""
    changes = {k: v for k, v in overrides.items() if layer_factor(k) is None}
    off = set(changes.pop("bn_off", base.bn_off))
    rates = dict(changes.pop("layer_dropout", base.layer_dropout))
    for name, value in overrides.items():
        layer = layer_factor(name)
        if layer is None:
            continue
        kind, layer_name = layer
        if kind == "bn":
            (off.discard if value else off.add)(layer_name)
        else:
            rates[layer_name] = float(value)
    return base.with_changes(bn_off=tuple(sorted(off)),
                             layer_dropout=tuple(sorted(rates.items())), **changes)
