import pytest

from cnn_ablation.config import ConfigError, RunConfig, check_name, config_diff, parse_bn


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


@pytest.mark.parametrize("changes,field,allowed", [
    ({"seed": 2**32}, "seed", ">= 0 and <= 4294967295"),
    ({"seed": 10**20}, "seed", ">= 0 and <= 4294967295"),
    ({"seed": True}, "seed", "whole number"),
    ({"epochs": 1001}, "epochs", ">= 1 and <= 1000 (ABLATION_MAX_EPOCHS)"),
    ({"epochs": 2.0}, "epochs", "whole number"),
    ({"dropout": float("nan")}, "dropout", "[0, 1)"),
    ({"learning_rate": float("inf")}, "learning_rate", "> 0"),
    ({"image_size": (8, 8)}, "image_size", "only folder:<path> datasets"),
    ({"dataset": "folder:/x", "image_size": (2000, 8)}, "image_size", "from 4 to 1024"),
    ({"dataset": "folder:/x", "image_size": (8,)}, "image_size", "two whole numbers"),
    ({"dataset": "folder:/x", "image_size": (8.0, 8)}, "image_size", "two whole numbers"),
    ({"dataset": "folder:/x", "image_size": 8}, "image_size", "two whole numbers"),
])
def test_limits_are_refused_naming_field_and_allowed_values(changes, field, allowed):
    with pytest.raises(ConfigError) as info:
        RunConfig(**changes)
    assert info.value.field == field and allowed in str(info.value)


def test_limits_follow_the_settings(monkeypatch):
    assert RunConfig(seed=2**32 - 1, epochs=1000).seed == 2**32 - 1
    monkeypatch.setenv("ABLATION_MAX_EPOCHS", "5")
    monkeypatch.setenv("ABLATION_MAX_IMAGE_SIDE", "64")
    assert RunConfig(epochs=5).epochs == 5
    with pytest.raises(ConfigError, match="epochs: 6 .* >= 1 and <= 5"):
        RunConfig(epochs=6)
    folder = RunConfig(dataset="folder:/x", epochs=1, image_size=(64, 4))
    assert folder.image_size == (64, 4)
    with pytest.raises(ConfigError, match="image_size: .* from 4 to 64"):
        folder.with_changes(image_size=(65, 4))


@pytest.mark.parametrize("name", ["", "ok", "n" * 200, "ünïcode · 名前", "with spaces and 'quotes'"])
def test_names_of_printable_text_are_allowed(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["n" * 201, "\x1b[31mred", "two\nlines", "a\tb", "nul\x00",
                                  "del\x7f", "zero\u200bwidth", None, 42])
def test_names_with_control_characters_or_too_long_are_refused(name):
    with pytest.raises(ConfigError) as info:
        check_name(name)
    assert info.value.field == "name" and "at most 200 printable characters" in str(info.value)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
