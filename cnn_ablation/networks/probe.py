"""A short-lived helper process that answers, with Keras, what the web app and the CLI need to
know about your own network without importing TensorFlow themselves:

    python -m cnn_ablation.networks.probe KEY --shape 32,32,3 --classes 10 [--bn-off a,b]
                                             [--dropout name=rate,...]

prints one JSON object: the BatchNorm and Dropout layers, the variant's parameter count and its
layers, or the refusal (`field`, `error`). `networks.probe` calls it and caches the answer by
(network hash, switches, data shape).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # a probe never needs the GPU


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnn_ablation.networks.probe")
    parser.add_argument("network")
    parser.add_argument("--shape", required=True)
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--bn-off", default="")
    parser.add_argument("--dropout", default="")
    args = parser.parse_args(argv)
    from cnn_ablation.config import ConfigError, RunConfig

    try:
        shape = tuple(int(v) for v in args.shape.split(","))
        config = RunConfig(network=args.network, dataset="synthetic",
                           bn_off=tuple(n for n in args.bn_off.split(",") if n),
                           layer_dropout=tuple((n, float(r)) for n, _, r in
                                               (item.partition("=") for item in
                                                args.dropout.split(",") if item)))
        from cnn_ablation.networks import surgery

        base = surgery.load(surgery.resolve(args.network), shape, args.classes)  # type: ignore[arg-type]
        model = surgery.build_custom(config, shape, args.classes)  # type: ignore[arg-type]
        variant = model.layers[-1]
        answer = {"ok": True, **surgery.switches(base), "params": int(model.count_params()),
                  "base_params": int(base.count_params()),
                  "layers": [[layer.name, type(layer).__name__, int(layer.count_params()),
                              output_shape(layer)] for layer in surgery._walk(variant)]}
    except ConfigError as exc:
        answer = {"ok": False, "field": exc.field, "error": str(exc)}
    print(json.dumps(answer))
    return 0


def output_shape(layer) -> list[int | None] | None:
    """A layer's output shape without the batch axis, as the summary shows it; None where
    Keras has none to give (a layer used twice, a nested model's inner input)."""
    try:
        return [int(d) if d is not None else None for d in tuple(layer.output.shape)[1:]]
    except (AttributeError, ValueError, TypeError, RuntimeError):
        return None


if __name__ == "__main__":
    sys.exit(main())
