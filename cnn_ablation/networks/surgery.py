"""Your own network's switches, with Keras: find every BatchNormalization and Dropout layer
(Sequential and Functional models, residual blocks, nested models), and build a variant in
which chosen BatchNorms are identities and each Dropout has its own rate. The variant is a
clone (`keras.models.clone_model(..., clone_function, recursive=True)`), so skip connections stay
wired; it is trained from scratch like the chapter's network. Imported only by training and by
the short-lived probe process (`network_probe`); the web app never imports this module.
"""

from __future__ import annotations

from typing import Any

import keras

from cnn_ablation.config import ConfigError, RunConfig
from cnn_ablation.networks.registry import Network, resolve


@keras.saving.register_keras_serializable(package="cnn_ablation")
class SwitchedOff(keras.layers.Layer):
    """A BatchNormalization switched off: passes its input through unchanged. (Keras' own
    Identity does not accept the `training`/`mask` arguments a BatchNorm's call was given.)"""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        return inputs


def load(network: Network, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """The network as stored: a `.keras` file loaded in safe mode (no code from the file), or
    the operator's builder called with the dataset's input shape and class count."""
    if network.kind == "file":
        assert network.path is not None
        try:
            model = keras.models.load_model(network.path, compile=False, safe_mode=True)
        except Exception as exc:  # a file that is not a (safe) Keras model
            raise ConfigError("network", network.title,
                              f"a Keras 3 .keras model file that loads in safe mode "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
        if not isinstance(model, keras.Model):
            raise ConfigError("network", network.title, "a Keras model")
        return model
    if network.kind == "builder":
        return _build(network, input_shape, num_classes)
    raise ConfigError("network", network.key, "your own network (file: or builder:)")


def _build(network: Network, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    import importlib.util

    assert network.path is not None
    module_name, func_name = network.key.split(":", 1)[1].rsplit("@", 1)[0].split(":")
    spec = importlib.util.spec_from_file_location(f"ablation_networks.{module_name}", network.path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        model = getattr(module, func_name)(input_shape, num_classes)
    except Exception as exc:
        raise ConfigError("network", network.title, f"a builder that returns a keras.Model "
                          f"(it raised {type(exc).__name__}: {exc})") from exc
    if not isinstance(model, keras.Model):
        raise ConfigError("network", network.title,
                          f"a builder that returns a keras.Model (it returned {type(model)})")
    return model


def _walk(model: keras.Model) -> list[keras.layers.Layer]:
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(_walk(layer))
    return found


def output_kind(model: keras.Model) -> str:
    """What the network's last layer gives: "probabilities" (softmax) or "logits" (linear: the
    loss is then taken `from_logits`). Any other output (relu, sigmoid, ...) cannot be trained
    with cross-entropy over classes: ConfigError naming it."""
    last: Any = model
    while isinstance(last, keras.Model) and last.layers:
        last = last.layers[-1]
    config = last.get_config() if hasattr(last, "get_config") else {}
    if isinstance(last, keras.layers.Softmax):
        return "probabilities"
    activation = config.get("activation", "linear")
    name = activation if isinstance(activation, str) else getattr(activation, "__name__", "?")
    if name == "softmax":
        return "probabilities"
    if name in ("linear", None):
        return "logits"
    raise ConfigError("network", model.name, "a network whose output is softmax probabilities "
                      f"or linear logits over the classes (this one ends in {last.name}, "
                      f"activation {name})")


def switches(model: keras.Model) -> dict[str, Any]:
    """Every BatchNorm (name, channels) and Dropout (name, rate) layer, nested models included."""
    layers = _walk(model)
    bns = [{"name": layer.name, "channels": int(layer.gamma.shape[0]) if layer.gamma is not None
            else int(layer.moving_mean.shape[0])}
           for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    drops = [{"name": layer.name, "rate": float(layer.rate)}
             for layer in layers if isinstance(layer, keras.layers.Dropout)]
    return {"batchnorm": bns, "dropout": drops}


def ablate(model: keras.Model, bn_off: tuple[str, ...] = (),
           dropout: tuple[tuple[str, float], ...] = ()) -> keras.Model:
    """A fresh clone of `model` with the BatchNorms in `bn_off` replaced by identities and the
    named Dropouts given new rates; every other layer is rebuilt from its config."""
    found = switches(model)
    bn_names = {b["name"] for b in found["batchnorm"]}
    drop_names = {d["name"] for d in found["dropout"]}
    unknown = [n for n in bn_off if n not in bn_names]
    if unknown:
        raise ConfigError("bn_off", ",".join(unknown), "BatchNorm layers of this network: "
                          + (", ".join(sorted(bn_names)) or "it has none"))
    rates = dict(dropout)
    unknown = [n for n in rates if n not in drop_names]
    if unknown:
        raise ConfigError("layer_dropout", ",".join(unknown), "Dropout layers of this network: "
                          + (", ".join(sorted(drop_names)) or "it has none"))

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name in bn_off:
            return SwitchedOff(name=layer.name)
        config = layer.get_config()
        if isinstance(layer, keras.layers.Dropout) and layer.name in rates:
            config["rate"] = rates[layer.name]
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def build_custom(config: RunConfig, input_shape: tuple[int, int, int],
                 num_classes: int) -> keras.Model:
    """The run's variant of its network, taking uint8 images like the chapter's model (scaled to
    [0, 1] before the network). Refuses a network whose input or output does not fit the data."""
    assert config.network is not None
    network = resolve(config.network)
    base = load(network, input_shape, num_classes)
    expected = tuple(base.input_shape[1:]) if hasattr(base, "input_shape") else None
    if expected is not None and len(expected) != 3:
        raise ConfigError("network", network.title,
                          "a network that takes images, height x width x channels (this one's "
                          f"input is {expected}, {len(expected)}-D)")
    if expected is not None and None not in expected and expected != tuple(input_shape):
        raise ConfigError("network", network.title,
                          f"a dataset of {'x'.join(map(str, expected))} images (the network's "
                          f"input); this dataset has {'x'.join(map(str, input_shape))}")
    units = base.output_shape[-1] if hasattr(base, "output_shape") else None
    if units is not None and units != num_classes:
        raise ConfigError("network", network.title, f"a dataset with {units} classes (the "
                          f"network's output); this dataset has {num_classes}")
    if not found_any(base):
        raise ConfigError("network", network.title,
                          "a network with at least one BatchNormalization or Dropout layer")
    output_kind(base)  # refuses an output cross-entropy cannot train
    variant = ablate(base, config.bn_off, config.layer_dropout)
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="input")
    scaled = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    return keras.Model(inputs, variant(scaled), name=network.title)


def found_any(model: keras.Model) -> bool:
    found = switches(model)
    return bool(found["batchnorm"] or found["dropout"])
