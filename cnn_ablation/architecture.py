"""The chapter's networks as small layer tables, and their Keras parameter arithmetic.

This module is pure Python so that the web app can draw the network and count its parameters
without importing TensorFlow; `model.build_model` builds Keras layers from the same tables, and the
tests check that both agree with Keras' own counts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Conv:
    name: str  # stable layer name, e.g. "conv_1"; its BatchNorm is "bn_conv_1"
    filters: int
    kernel: int
    stride: int
    bn_switch: bool = True  # a BatchNorm + LeakyReLU may follow (seed); conv_basics has neither


@dataclass(frozen=True)
class Dense:
    name: str
    units: int
    bn_switch: bool = True
    dropout: bool = False  # the seed network's dense_1 ends in Dropout(rate)


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    input_shape: tuple[int, int, int]  # the chapter's own input, used when no dataset is named
    hidden: tuple[Conv | Dense, ...]

    @property
    def bn_positions(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.hidden if layer.bn_switch)

    @property
    def has_dropout(self) -> bool:
        return any(isinstance(layer, Dense) and layer.dropout for layer in self.hidden)


PRESETS: dict[str, Preset] = {
    # The network of shared/seed: four 3x3 convolutions (stride 1, 2, 1, 2), Dense(128), Dropout.
    "seed": Preset(
        "seed",
        "Chapter CNN (seed)",
        (32, 32, 3),
        (
            Conv("conv_1", 32, 3, 1),
            Conv("conv_2", 32, 3, 2),
            Conv("conv_3", 64, 3, 1),
            Conv("conv_4", 64, 3, 2),
            Dense("dense_1", 128, dropout=True),
        ),
    ),
    # The chapter's first example: two plain convolutions, no BatchNorm, no activation.
    "conv_basics": Preset(
        "conv_basics",
        "First example (conv_basics)",
        (64, 64, 1),
        (Conv("conv_1", 2, 3, 1, bn_switch=False), Conv("conv_2", 20, 3, 2, bn_switch=False)),
    ),
}


@dataclass(frozen=True)
class LayerRow:
    """One row of a model summary, as Keras' `model.summary()` would print it."""

    name: str
    kind: str  # Keras class name
    output_shape: tuple[int, ...]
    params: int
    detail: str = ""  # e.g. "32 filters 3x3 stride 1"


def _same_padding_out(size: int, stride: int) -> int:
    return -(-size // stride)  # ceil: padding="same"


def summary_rows(
    preset: str,
    bn: tuple[bool, ...],
    input_shape: tuple[int, int, int],
    num_classes: int = 10,
    dropout: float = 0.5,
) -> list[LayerRow]:
    """The model's layers in order with output shapes and parameter counts (equal to Keras')."""
    spec = PRESETS[preset]
    bn_on = dict(zip(spec.bn_positions, bn, strict=True))
    h, w, c = input_shape
    rows = [
        LayerRow("input", "InputLayer", (h, w, c), 0, "uint8 images"),
        LayerRow("rescale", "Rescaling", (h, w, c), 0, "x / 255"),
    ]
    features = None
    for layer in spec.hidden:
        if isinstance(layer, Conv):
            h, w = _same_padding_out(h, layer.stride), _same_padding_out(w, layer.stride)
            params = (layer.kernel * layer.kernel * c + 1) * layer.filters
            c = layer.filters
            shape: tuple[int, ...] = (h, w, c)
            detail = f"{layer.filters} filters {layer.kernel}x{layer.kernel} stride {layer.stride}"
            rows.append(LayerRow(layer.name, "Conv2D", shape, params, detail))
            width = c
        else:
            if features is None:
                features = h * w * c
                rows.append(LayerRow("flatten", "Flatten", (features,), 0))
            params = (features + 1) * layer.units
            features = layer.units
            shape = (features,)
            rows.append(LayerRow(layer.name, "Dense", shape, params, f"{layer.units} units"))
            width = layer.units
        if layer.bn_switch:
            if bn_on[layer.name]:
                rows.append(LayerRow(f"bn_{layer.name}", "BatchNormalization", shape, 4 * width))
            rows.append(LayerRow(f"act_{layer.name}", "LeakyReLU", shape, 0))
        if isinstance(layer, Dense) and layer.dropout:
            rows.append(LayerRow("dropout", "Dropout", shape, 0, f"rate {dropout:g}"))
    if features is None:
        features = h * w * c
        rows.append(LayerRow("flatten", "Flatten", (features,), 0))
    rows.append(
        LayerRow("output", "Dense", (num_classes,), (features + 1) * num_classes, "softmax")
    )
    return rows


def count_params(
    preset: str, bn: tuple[bool, ...], input_shape: tuple[int, int, int], num_classes: int = 10
) -> int:
    return sum(row.params for row in summary_rows(preset, bn, input_shape, num_classes))
