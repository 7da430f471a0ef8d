"""The command line as a user runs it: real processes, a temporary SQLite file."""

import json
import sqlite3

import pytest


def count_runs(home):
    db = home / "ablation.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("select count(*) from runs").fetchone()[0]


@pytest.mark.slow
def test_train_then_show_json_round_trip(home, cli):
    trained = cli("train", "--dataset", "synthetic:300", "--bn", "1,0,0,0,1", "--dropout", "0.3",
                  "--epochs", "2", "--name", "smoke")
    assert trained.returncode == 0, trained.stderr
    assert "epoch 1/2" in trained.stdout and "epoch 2/2" in trained.stdout
    assert "run 1: completed" in trained.stdout
    shown = cli("show", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)
    assert run["status"] == "completed" and run["name"] == "smoke"
    assert run["config"]["bn"] == [1, 0, 0, 0, 1] and run["config"]["dropout"] == 0.3
    assert [e["epoch"] for e in run["epoch_metrics"]] == [1, 2]
    assert run["test_accuracy"] is not None and run["params"] == 591_914
    listed = json.loads(cli("runs", "--json").stdout)
    assert [r["id"] for r in listed] == [1] and listed[0]["epochs_done"] == 2


@pytest.mark.parametrize("flags,message", [
    (["--dataset", "imagenet"], "dataset: 'imagenet' is not allowed"),
    (["--dropout", "1.5"], "dropout: 1.5 is not allowed; allowed: a number in [0, 1)"),
    (["--bn", "1,1,1"], "bn: '1,1,1' is not allowed"),
    (["--epochs", "0"], "epochs: 0 is not allowed"),
    (["--dataset", "synthetic", "--batch-size", "5000"], "batch_size: 5000 is not allowed"),
    (["--dataset", "folder:/does/not/exist"], "dataset: 'folder:/does/not/exist'"),
    (["--dropout", "lots"], "argument --dropout: invalid float value"),
])
@pytest.mark.parametrize("command", ["train", "submit"])
def test_bad_flags_exit_2_and_leave_the_database_untouched(home, command, flags, message, cli):
    result = cli(command, *flags)
    assert result.returncode == 2
    assert message in result.stderr
    assert count_runs(home) == 0


def test_unreadable_database_is_refused(home, cli):
    (home / "ablation.db").write_bytes(b"this is not a database" * 100)
    result = cli("runs")
    assert result.returncode == 2 and "database" in result.stderr


def test_show_unknown_run_exits_2(home, cli):
    result = cli("show", "42")
    assert result.returncode == 2 and "run 42 does not exist" in result.stderr


def test_summary_needs_no_dataset_files(home, cli):
    result = cli("summary", "--preset", "conv_basics")
    assert result.returncode == 0, result.stderr
    assert "Total params: 205,210" in result.stdout
    result = cli("summary", "--dataset", "cifar100", "--bn", "1,0,0,0,0")
    assert f"Total params: {591_402 + 90 * 129:,}" in result.stdout  # 100 classes: wider output
