"""A study's factors and their levels as people type them: `bn_conv_3` (on/off), `dropout=0,0.25`,
`learning_rate=...`, and with your own network `bn:LAYER` and `dropout:LAYER=...`; parsed alike
for the CLI and the Studies page, and written back as text."""

from __future__ import annotations

from typing import Any

from cnn_ablation.config import ConfigError

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


def distinct_levels(name: str, levels: tuple) -> tuple:
    if len(set(levels)) < 2:
        raise ConfigError(name, list(levels), "at least two different levels")
    return tuple(dict.fromkeys(levels))


def level_text(value: Any) -> str:
    """A factor level as people write it: on/off for switches, 0.25 for numbers."""
    value = value.item() if hasattr(value, "item") else value  # NumPy scalars from frames
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:  # a Dropout layer of your own network at the rate it was saved with
        return "as saved"
    return f"{value:g}" if isinstance(value, float) else str(value)
