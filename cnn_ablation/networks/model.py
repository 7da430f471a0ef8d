"""`build_model(config)`: the chapter's networks with stable layer names, never compiled here.

Layers are named after the architecture table: `conv_1..conv_4`, `dense_1`, their BatchNorms
`bn_conv_1..`, activations `act_conv_1..`, then `dropout` and `output`. Inputs are uint8 images;
the `rescale` layer maps them to [0, 1] inside the model so the data can stay uint8 until then.
"""

from __future__ import annotations

import keras
from keras import layers

from cnn_ablation.architecture import PRESETS, Conv
from cnn_ablation.config import RunConfig


def build_model(
    config: RunConfig, input_shape: tuple[int, int, int] | None = None, num_classes: int = 10
) -> keras.Model:
    spec = PRESETS[config.preset]
    shape = input_shape or spec.input_shape
    bn_on = dict(zip(spec.bn_positions, config.switches, strict=True))
    inputs = keras.Input(shape=shape, dtype="uint8", name="input")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    flattened = False
    for layer in spec.hidden:
        if isinstance(layer, Conv):
            x = layers.Conv2D(
                layer.filters, layer.kernel, strides=layer.stride, padding="same", name=layer.name
            )(x)
        else:
            if not flattened:
                x, flattened = layers.Flatten(name="flatten")(x), True
            x = layers.Dense(layer.units, name=layer.name)(x)
        if layer.bn_switch:
            if bn_on[layer.name]:
                x = layers.BatchNormalization(name=f"bn_{layer.name}")(x)
            x = layers.LeakyReLU(name=f"act_{layer.name}")(x)
        if getattr(layer, "dropout", False):
            x = layers.Dropout(rate=config.dropout, name="dropout")(x)
    if not flattened:
        x = layers.Flatten(name="flatten")(x)
    # float32 output keeps the softmax stable if a mixed-precision policy is ever set.
    outputs = layers.Dense(num_classes, activation="softmax", name="output", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=config.preset)
