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


def test_label_renames_tags_untags_and_comments_and_runs_filters_by_tag(home, cli):
    ids = [cli("submit", "--dataset", "synthetic:100", "--epochs", "1", "--seed", str(s),
               "--name", f"r{s}").stdout.strip() for s in range(2)]
    assert ids == ["1", "2"]
    result = cli("label", "1", "--name", "baseline", "--tag", "BN-Off", "sweep:1", "--tag", "x",
                 "--comment", "first try")
    assert result.returncode == 0, result.stderr
    assert "run 1: name 'baseline', tags bn-off, sweep:1, x, comment 'first try'" in result.stdout
    result = cli("label", "1", "--untag", "x", "--tag", "keep")
    assert "tags bn-off, keep, sweep:1, comment 'first try'" in result.stdout
    cli("label", "2", "--tag", "keep")
    listed = json.loads(cli("runs", "--json", "--tag", "keep").stdout)
    assert [r["id"] for r in listed] == [1, 2]
    listed = json.loads(cli("runs", "--json", "--tag", "KEEP", "--tag", "bn-off").stdout)
    assert [r["id"] for r in listed] == [1] and listed[0]["name"] == "baseline"
    assert json.loads(cli("runs", "--json", "--tag", "nope").stdout) == []
    shown = json.loads(cli("show", "1", "--json").stdout)
    assert (shown["tags"], shown["comment"]) == (["bn-off", "keep", "sweep:1"], "first try")
    shown = json.loads(cli("show", "2", "--json").stdout)
    assert shown["name"] == "r1" and shown["tags"] == ["keep"]  # only its own labels
    assert cli("label", "1", "--comment", "").stdout.rstrip().endswith("comment (none)")
    with sqlite3.connect(home / "ablation.db") as db:
        assert db.execute("select name, tags_json, comment from runs where id = 1").fetchone() \
            == ("baseline", '["bn-off", "keep", "sweep:1"]', None)


@pytest.mark.parametrize("flags,message", [
    (["--tag", "has space"], "tag: 'has space' is not allowed; allowed: 1 to 32"),
    (["--tag", "x" * 33], "tag: "),
    (["--untag", "a/b"], "tag: 'a/b' is not allowed"),
    (["--name", "bad\x1bname"], "name: 'bad\\x1bname' is not allowed"),
    (["--comment", "c" * 2001], "comment: "),
    (["--tag", *[f"t{i}" for i in range(21)]], "tags: '21 tags' is not allowed; allowed: at most"),
])
def test_bad_labels_exit_2_naming_the_field_and_change_nothing(home, cli, flags, message):
    assert cli("submit", "--dataset", "synthetic:100", "--name", "kept").returncode == 0
    result = cli("label", "1", "--comment", "not this either", *flags)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    with sqlite3.connect(home / "ablation.db") as db:
        assert db.execute("select name, tags_json, comment from runs").fetchall() == [
            ("kept", "[]", None)]


def test_label_of_a_missing_run_and_bad_input_before_a_database_exists(home, cli):
    result = cli("label", "7", "--tag", "x")
    assert result.returncode == 2 and "run 7 does not exist" in result.stderr
    assert not (home / "ablation.db").exists()  # no empty database left behind for nothing
    result = cli("label", "7", "--tag", "no way")
    assert result.returncode == 2 and "tag: 'no way'" in result.stderr
    assert not (home / "ablation.db").exists()  # refused before the database was opened
    result = cli("runs", "--tag", "no way")
    assert result.returncode == 2 and "tag: 'no way'" in result.stderr


def test_delete_removes_the_runs_files_and_no_others(home, cli):
    for seed in range(2):
        assert cli("submit", "--dataset", "synthetic:100", "--seed", str(seed)).returncode == 0
    files = [home / "logs" / "run-1-0a1b2c3d.log", home / "checkpoints" / "run-1.keras",
             home / "tensorboard" / "run-1" / "events.out.tfevents.1.host"]
    others = [home / "logs" / "run-10-0a1b2c3d.log", home / "logs" / "run-2-ffffffff.log",
              home / "checkpoints" / "run-2.keras", home / "tensorboard" / "run-2" / "e"]
    for path in files + others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    with sqlite3.connect(home / "ablation.db") as db:
        db.execute("update runs set log_path = ? where id = 1", (str(files[0]),))
        db.execute("update runs set log_path = ? where id = 2", (str(others[0]),))  # not its own
        db.execute("update runs set status = 'running' where id = 2")
    result = cli("delete", "2")
    assert result.returncode == 2 and "run 2 is running" in result.stderr
    assert all(path.exists() for path in others)
    result = cli("delete", "1")
    assert result.returncode == 0, result.stderr
    assert "run 1: deleted; removed " in result.stdout and str(files[0]) in result.stdout
    assert not any(path.exists() for path in files) and not files[2].parent.exists()
    assert all(path.exists() for path in others) and count_runs(home) == 1
    with sqlite3.connect(home / "ablation.db") as db:
        db.execute("update runs set status = 'failed' where id = 2")
    assert cli("delete", "2").returncode == 0
    assert others[0].exists()  # a log path that is not run 2's own name is never removed
    assert others[1].exists()  # nor a log file the run never recorded as its own
    assert not others[2].exists() and not others[3].parent.exists()


def test_gc_removes_what_nothing_needs_and_prints_each_item(home, cli, engine):
    """Files of a deleted run, a checkpoint of a finished run, an unused network copy, a worker
    gone for over a week (its row and log): removed and named; what a run still needs stays."""
    import os
    import time

    from cnn_ablation.storage import lifecycle, workers
    from cnn_ablation.storage.engine import session_scope
    from cnn_ablation.storage.models import WorkerRow

    for seed in range(2):
        assert cli("submit", "--dataset", "synthetic:100", "--seed", str(seed)).returncode == 0
    lifecycle.claim(engine, "w", "h", "cpu", 5.0)
    lifecycle.finish(engine, 1, "completed", worker_id="w")
    keep = [home / "logs" / "run-1-0a1b2c3d.log", home / "checkpoints" / "run-2.keras",
            home / "tensorboard" / "run-1" / "events"]
    gone = [home / "logs" / "run-7-0a1b2c3d.log", home / "tensorboard" / "run-7" / "events",
            home / "checkpoints" / "run-1.keras", home / "networks" / ".store" / "deadbeef.keras",
            home / "logs" / "worker-old.log", home / "logs" / "worker-old.log.1"]
    for path in keep + gone:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    week_ago = time.time() - 8 * 24 * 3600
    for name in ("worker-old.log", "worker-old.log.1"):  # the log and its earlier part
        os.utime(home / "logs" / name, (week_ago, week_ago))
    workers.register_worker(engine, "old", "elsewhere", 1, "cpu")
    with session_scope(engine) as session:
        row = session.get(WorkerRow, "old")
        row.stopped_at = row.heartbeat_at = week_ago
    listed = cli("gc", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert "7 item(s) to remove" in listed.stdout and all(p.exists() for p in keep + gone)
    assert "would remove the row of worker old" in listed.stdout
    done = cli("gc")
    assert done.returncode == 0, done.stderr
    assert all(f"removed {p if p.parent.name not in ('run-7',) else p.parent}" in done.stdout
               for p in gone), done.stdout
    assert "removed the row of worker old" in done.stdout
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)
    assert workers.worker_ids(engine) == []


def test_help_lists_every_command_a_person_uses_and_not_the_workers_own(cli):
    """`execute` (a worker's child process) was listed as `execute ==SUPPRESS==`."""
    shown = cli("--help")
    assert shown.returncode == 0
    assert "SUPPRESS" not in shown.stdout and "execute" not in shown.stdout
    for command in ("train", "submit", "worker", "runs", "show", "gc", "study"):
        assert command in shown.stdout


def test_runs_with_a_filter_that_matches_nothing_says_so_not_that_there_are_no_runs(home, cli):
    assert cli("submit", "--dataset", "synthetic:100").returncode == 0
    out = cli("runs", "--status", "running")
    assert out.returncode == 0
    assert out.stdout.strip() == ("no runs match (status running); 1 run in all: "
                                  "`python -m cnn_ablation runs` lists them")


def test_runs_lists_the_newest_and_says_how_many_more_limit_and_all_list_more(home, cli):
    """`runs` prints the newest --limit runs (1,000 unless told), oldest of them first, and a
    line saying how many match in all; with --json that line goes to stderr, so stdout stays
    JSON. --all lists every run; --limit and --all together are refused."""
    from cnn_ablation.config import RunConfig
    from cnn_ablation.jobs.launch import new_run
    from cnn_ablation.storage.engine import get_engine
    from cnn_ablation.storage.runs import create_runs

    engine = get_engine(f"sqlite:///{home}/ablation.db")
    create_runs(engine, [new_run(RunConfig(dataset="synthetic", seed=s)) for s in range(5)])
    out = cli("runs", "--limit", "2")
    assert out.returncode == 0, out.stderr
    ids = [line.split()[0] for line in out.stdout.splitlines()[1:]
           if line.split() and line.split()[0].isdigit()]
    assert ids == ["4", "5"]
    assert "the newest 2 of 5 runs; --all lists every one" in out.stdout
    listed = cli("runs", "--limit", "2", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [4, 5]
    assert "the newest 2 of 5 runs" in listed.stderr
    every = cli("runs", "--all", "--json")
    assert [r["id"] for r in json.loads(every.stdout)] == [1, 2, 3, 4, 5] and not every.stderr
    assert "of 5 runs" not in cli("runs").stdout  # all 5 fit under the default
    both = cli("runs", "--all", "--limit", "2")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    zero = cli("runs", "--limit", "0")
    assert zero.returncode == 2 and "--limit: 0 is not allowed" in zero.stderr
