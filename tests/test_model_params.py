"""Parameter counts against the chapter's model.summary(), from Keras and from the pure table."""

import pytest

from cnn_ablation.architecture import count_params, summary_rows
from cnn_ablation.config import RunConfig

keras_model = pytest.importorskip("cnn_ablation.networks.model")

CHAPTER_SEED_LAYERS = {  # shared/seed: model.summary() of the all-BatchNorm network
    "conv_1": 896, "bn_conv_1": 128, "conv_2": 9_248, "bn_conv_2": 128, "conv_3": 18_496,
    "bn_conv_3": 256, "conv_4": 36_928, "bn_conv_4": 256, "dense_1": 524_416,
    "bn_dense_1": 512, "output": 1_290,
}


def keras_counts(config, shape=None, classes=10):
    model = keras_model.build_model(config, shape, classes)
    return model, {layer.name: layer.count_params() for layer in model.layers}


def test_seed_with_all_batchnorm_has_the_chapters_592554_params_per_layer():
    model, counts = keras_counts(RunConfig())
    assert model.count_params() == 592_554
    for name, params in CHAPTER_SEED_LAYERS.items():
        assert counts[name] == params, name


def test_bn_on_conv_1_only_has_591402_params():
    model, _ = keras_counts(RunConfig(bn=(1, 0, 0, 0, 0)))
    assert model.count_params() == 591_402


def test_bn_off_on_conv_2_removes_128_params():
    model, counts = keras_counts(RunConfig(bn=(1, 0, 1, 1, 1)))
    assert model.count_params() == 592_554 - 128
    assert "bn_conv_2" not in counts and "act_conv_2" in counts


def test_conv_basics_has_20_380_204810_params():
    model, counts = keras_counts(RunConfig(preset="conv_basics", bn=()))
    assert (counts["conv_1"], counts["conv_2"], counts["output"]) == (20, 380, 204_810)
    assert model.count_params() == 205_210


@pytest.mark.parametrize("bn", [(1, 1, 1, 1, 1), (0, 0, 0, 0, 0), (1, 0, 1, 0, 1), (0, 1, 0, 1, 0)])
@pytest.mark.parametrize("shape,classes", [((32, 32, 3), 10), ((28, 28, 1), 10), ((40, 24, 3), 7)])
def test_table_without_tensorflow_equals_keras_layer_by_layer(bn, shape, classes):
    config = RunConfig(bn=bn)
    model, counts = keras_counts(config, shape, classes)
    rows = summary_rows("seed", config.bn, shape, classes)
    assert [(r.name, r.params) for r in rows] == list(counts.items())
    assert [r.output_shape for r in rows] == [tuple(layer.output.shape[1:]) for layer in model.layers]
    assert count_params("seed", config.bn, shape, classes) == model.count_params()


def test_fashion_mnist_input_shrinks_the_dense_layer():
    model, counts = keras_counts(RunConfig(), (28, 28, 1))
    assert model.input_shape == (None, 28, 28, 1)
    assert counts["dense_1"] == (7 * 7 * 64 + 1) * 128
    assert counts["conv_1"] == (3 * 3 * 1 + 1) * 32


def test_the_readme_states_both_counts_a_user_sees_and_why_they_differ():
    """The README gave 592,554 (32x32x3 inputs) while New run, on its default Fashion-MNIST,
    shows 469,098 without saying why; both are counted here from the pure table."""
    import re

    from tests.support import ROOT

    cifar = count_params("seed", (True,) * 5, (32, 32, 3), 10)
    fashion = count_params("seed", (True,) * 5, (28, 28, 1), 10)
    assert (cifar, fashion) == (592_554, 469_098)
    intro = (ROOT / "README.md").read_text().split("## ", 1)[0]
    assert f"{cifar:,} parameters" in intro and f"{fashion:,}" in intro
    assert re.search(r"Fashion-MNIST.{0,80}default dataset", intro, re.S)
    assert "7×7" in intro and "8×8" in intro  # why: the map Dense(128) sees
