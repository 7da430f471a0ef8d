import pytest

from cnn_ablation.config import ConfigError, RunConfig, config_diff, parse_bn


def test_defaults_are_the_chapters_recipe():
    c = RunConfig()
    assert (c.preset, c.bn, c.dropout, c.epochs, c.batch_size, c.learning_rate) == (
        "seed", (True,) * 5, 0.5, 10, 32, 0.0005)


def test_json_round_trip_and_stable_hash():
    c = RunConfig(dataset="synthetic", bn=(1, 0, 0, 0, 1), dropout=0.3, epochs=2, seed=3)
    back = RunConfig.from_json(c.to_json())
    assert back == c and back.config_hash == c.config_hash
    assert c.config_hash == RunConfig.from_dict(c.to_dict()).config_hash
    assert c.with_changes(seed=4).config_hash != c.config_hash
    assert c.with_changes(seed=4).variant_hash == c.variant_hash
    assert c.label == "BN 1·0·0·0·1 · drop 0.3"


def test_configs_are_immutable():
    with pytest.raises(AttributeError):
        RunConfig().dropout = 0.1  # type: ignore[misc]


@pytest.mark.parametrize("changes,field,allowed", [
    ({"dataset": "imagenet"}, "dataset", "cifar10"),
    ({"dropout": 1.0}, "dropout", "[0, 1)"),
    ({"dropout": -0.1}, "dropout", "[0, 1)"),
    ({"bn": (1, 1, 1)}, "bn", "5 values"),
    ({"epochs": 0}, "epochs", ">= 1"),
    ({"batch_size": 0}, "batch_size", ">= 1"),
    ({"learning_rate": 0}, "learning_rate", "> 0"),
    ({"val_split": 1.0}, "val_split", "[0, 1)"),
    ({"preset": "resnet"}, "preset", "seed | conv_basics"),
    ({"seed": -1}, "seed", ">= 0"),
    ({"limit_train": 0}, "limit_train", ">= 1"),
])
def test_bad_values_are_refused_naming_field_and_allowed_values(changes, field, allowed):
    with pytest.raises(ConfigError) as info:
        RunConfig(**changes)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ") and allowed in str(info.value)


def test_bn_text_must_be_zeros_and_ones():
    assert parse_bn("1,0,1,0,1") == (True, False, True, False, True)
    with pytest.raises(ConfigError, match="bn: '1,2,0,0,1'"):
        parse_bn("1,2,0,0,1")


def test_unknown_json_field_is_named():
    with pytest.raises(ConfigError, match="^colour"):
        RunConfig.from_dict({"colour": "red"})


def test_config_diff_names_only_fields_that_differ():
    a = RunConfig(dataset="synthetic")
    assert config_diff([a, a.with_changes(dropout=0.25), a.with_changes(bn=(1, 0, 1, 1, 1))]) == [
        "bn", "dropout"]
