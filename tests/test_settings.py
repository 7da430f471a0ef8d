"""The environment as one object: defaults, parsing, refusals, and the README's table."""

import pytest

from cnn_ablation.settings import SettingsError, readme_table, settings
from tests.support import ROOT


def test_readme_configuration_table_is_the_one_in_settings():
    assert readme_table() in (ROOT / "README.md").read_text()


def test_defaults_put_everything_under_the_home(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("ABLATION_HOME", "ABLATION_DATABASE_URL", "ABLATION_HEARTBEAT_SECONDS",
                 "ABLATION_START_WORKER"):
        monkeypatch.delenv(name, raising=False)
    config = settings()
    assert config.home == (tmp_path / "ablation-data").resolve()
    assert config.database_url == f"sqlite:///{config.home / 'ablation.db'}"
    assert config.logs == config.home / "logs" and config.heartbeat_s == 5.0
    assert config.start_worker is True


def test_a_changed_variable_is_seen_at_the_next_call(monkeypatch, tmp_path):
    monkeypatch.setenv("ABLATION_HOME", str(tmp_path / "a"))
    assert settings().home.name == "a"
    monkeypatch.setenv("ABLATION_HOME", str(tmp_path / "b"))
    assert settings().home.name == "b"


@pytest.mark.parametrize("name,value", [("ABLATION_HEARTBEAT_SECONDS", "0"),
                                        ("ABLATION_HEARTBEAT_SECONDS", "soon"),
                                        ("ABLATION_CANCEL_GRACE_SECONDS", "-1"),
                                        ("ABLATION_START_WORKER", "yes")])
def test_unusable_values_are_refused_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        settings()


def test_cuda_visible_devices_lists_the_gpus_a_worker_may_use(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0, 2")
    assert settings().visible_gpus == ("0", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert settings().visible_gpus == ()
