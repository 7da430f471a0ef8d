"""Schema migrations on real SQLite files: an old database is upgraded with nothing lost, a new
one equals the models, several processes upgrading at once do it once, ids are never reused."""

import sqlite3
import subprocess
import sys

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from cnn_ablation.config import RunConfig
from cnn_ablation.jobs.launch import submit
from cnn_ablation.storage.curves import epochs_frame
from cnn_ablation.storage.engine import get_engine
from cnn_ablation.storage.migrate import HEAD, _alembic_config
from cnn_ablation.storage.models import Base
from cnn_ablation.storage.runs import delete_run, find_run
from tests.support import ROOT


def schema_differences(url: str) -> list:
    with create_engine(url).connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def old_database(path) -> str:
    """A database at the first revision (the schema before migrations), with three runs and
    their epochs."""
    url = f"sqlite:///{path}"
    with create_engine(url).connect() as conn:
        command.upgrade(_alembic_config(conn), "0001")
        conn.commit()
    with sqlite3.connect(path) as db:
        for run_id, status in ((1, "completed"), (2, "running"), (3, "completed")):
            db.execute("INSERT INTO runs (id, name, config_json, config_hash, variant_hash, "
                       "label, dataset, preset, seed, epochs, status, created_at, "
                       "cancel_requested) VALUES (?, 'old', '{}', 'h', 'v', 'BN 1·1·1·1·1', "
                       "'synthetic', 'seed', 0, 2, ?, 1.0, 0)", (run_id, status))
            for epoch in (1, 2):
                db.execute("INSERT INTO epoch_metrics (run_id, epoch, loss, seconds, "
                           "recorded_at) VALUES (?, ?, 0.5, 1.0, 1.0)", (run_id, epoch))
    return url


def test_an_old_database_is_upgraded_to_head_with_nothing_lost(tmp_path):
    url = old_database(tmp_path / "old.db")
    engine = get_engine(url)
    with sqlite3.connect(tmp_path / "old.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD,)
    assert epochs_frame(engine, [1, 2, 3])["run_id"].tolist() == [1, 1, 2, 2, 3, 3]  # no loss
    assert find_run(engine, 2).status == "running" and find_run(engine, 1).name == "old"
    assert schema_differences(url) == []
    delete_run(engine, 3)  # from the upgrade on, a deleted id never comes back
    assert submit(engine, [RunConfig(dataset="synthetic")]) == [4]


def test_a_new_database_matches_the_models_and_never_reuses_a_deleted_id(tmp_path, home):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    engine = get_engine(url)
    assert schema_differences(url) == []
    ids = submit(engine, [RunConfig(dataset="synthetic", seed=s) for s in range(3)])
    delete_run(engine, ids[-1])
    assert submit(engine, [RunConfig(dataset="synthetic")]) == [ids[-1] + 1]


def test_processes_starting_together_upgrade_once_and_all_open_the_database(tmp_path):
    url = old_database(tmp_path / "shared.db")
    code = ("import sys; from cnn_ablation.storage.engine import get_engine; "
            "from cnn_ablation.storage.runs import find_run;"
            f" print(find_run(get_engine({url!r}), 2).status)")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-800:] for _, err in results]
    assert [out.strip() for out, _ in results] == ["running"] * 4
    assert schema_differences(url) == []


def test_an_old_postgresql_database_is_upgraded_with_nothing_lost(postgres):
    from sqlalchemy import text

    url = postgres.create("migrate_old")
    try:
        with create_engine(url).connect() as conn:
            command.upgrade(_alembic_config(conn), "0001")
            conn.commit()
            for run_id in (1, 2):
                conn.execute(text(
                    "INSERT INTO runs (id, name, config_json, config_hash, variant_hash, label, "
                    "dataset, preset, seed, epochs, status, created_at, cancel_requested) VALUES "
                    "(:id, 'old', '{}', 'h', 'v', 'l', 'synthetic', 'seed', 0, 2, 'completed', "
                    "1.0, false)"), {"id": run_id})
                conn.execute(text("INSERT INTO epoch_metrics (run_id, epoch, loss, seconds, "
                                  "recorded_at) VALUES (:id, 1, 0.5, 1.0, 1.0)"), {"id": run_id})
            conn.execute(text("SELECT setval('runs_id_seq', 2)"))
            conn.commit()
        engine = get_engine(url)
        assert epochs_frame(engine, [1, 2])["run_id"].tolist() == [1, 2]
        assert schema_differences(url) == []
        delete_run(engine, 2)
        assert submit(engine, [RunConfig(dataset="synthetic")]) == [3]  # a sequence: no reuse
        engine.dispose()
    finally:
        postgres.drop("migrate_old")


def test_a_0003_database_gets_tags_comment_and_steps_with_its_runs_kept(tmp_path):
    from cnn_ablation.storage.curves import step_rows
    from cnn_ablation.storage.lifecycle import claim, record_steps
    from cnn_ablation.storage.runs import update_labels

    path = tmp_path / "v3.db"
    url = f"sqlite:///{path}"
    with create_engine(url).connect() as conn:
        command.upgrade(_alembic_config(conn), "0003")
        conn.commit()
    with sqlite3.connect(path) as db:
        for run_id, status in ((1, "completed"), (2, "queued")):
            db.execute("INSERT INTO runs (id, name, config_json, config_hash, variant_hash, "
                       "label, dataset, preset, seed, epochs, status, created_at, "
                       "cancel_requested, environment_json) VALUES (?, 'v3', '{}', 'h', 'v', "
                       "'l', 'synthetic', 'seed', 0, 2, ?, 1.0, 0, '{\"python\": \"3.11\"}')",
                       (run_id, status))
        db.execute("INSERT INTO epoch_metrics (run_id, epoch, loss, seconds, recorded_at) "
                   "VALUES (1, 1, 0.5, 1.0, 1.0)")
    engine = get_engine(url)
    assert HEAD == "0007" and schema_differences(url) == []
    old = find_run(engine, 1)
    assert (old.name, old.tags, old.comment, old.environment) == ("v3", (), None,
                                                                 {"python": "3.11"})
    assert epochs_frame(engine, [1])["loss"].tolist() == [0.5]
    assert update_labels(engine, 1, tags=["Old"], comment="from 0003").tags == ("old",)
    assert claim(engine, "w", "h", "cpu", 5.0).id == 2
    record_steps(engine, 2, "w", [(1, 1, 2.0, 0.1)])
    assert [r["step"] for r in step_rows(engine, [2])] == [1]
    delete_run(engine, 1)  # still cascades after the table rebuild
    assert epochs_frame(engine, [1]).empty


AGGREGATE_COLUMNS = ("epochs_done", "best_val_accuracy", "last_epoch", "final_val_accuracy",
                     "final_accuracy", "final_val_loss")
INDEXES_0007 = ("ix_runs_best_val_accuracy", "ix_runs_final_val_accuracy",
                "ix_runs_test_accuracy", "ix_runs_dataset", "ix_runs_tagged", "ix_runs_variant")


def back_to_0006(conn) -> None:
    """Undo 0007 on a SQLite database made at HEAD: its indexes, columns and table go, the
    index on the variant alone comes back."""
    for name in INDEXES_0007:
        conn.exec_driver_sql(f"DROP INDEX {name}")
    for column in AGGREGATE_COLUMNS:
        conn.exec_driver_sql(f"ALTER TABLE runs DROP COLUMN {column}")
    conn.exec_driver_sql("CREATE INDEX ix_runs_variant_hash ON runs (variant_hash)")
    conn.exec_driver_sql("DROP TABLE run_deletions")
    conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0006'")


def test_a_0004_database_gets_the_workers_host_identity_with_its_workers_kept(tmp_path):
    """0005 adds workers.host_id and workers.process_started_at; a worker row written before
    keeps its values (and is judged as before: by hostname and its database-clock start)."""
    url = f"sqlite:///{tmp_path / 'v4.db'}"
    engine = get_engine(url)
    with engine.begin() as conn:  # back to 0004's schema, then a worker row as 0004 wrote it
        back_to_0006(conn)
        conn.exec_driver_sql("ALTER TABLE workers DROP COLUMN host_id")
        conn.exec_driver_sql("ALTER TABLE workers DROP COLUMN process_started_at")
        conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN backend")  # 0006's
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0004'")
        conn.exec_driver_sql("INSERT INTO workers (id, host, pid, slots, started_at, "
                             "heartbeat_at) VALUES ('w-old', 'h', 7, 'cpu', 1.0, 2.0)")
    engine.dispose()
    get_engine.cache_clear()  # a new process, as far as the engine cache knows: migrate again
    again = get_engine(url)
    assert schema_differences(url) == []
    with again.connect() as conn:
        row = conn.exec_driver_sql("SELECT id, pid, started_at, host_id, process_started_at "
                                   "FROM workers").one()
    assert tuple(row) == ("w-old", 7, 1.0, None, None)


def test_a_0005_database_gets_the_runs_backend_with_its_runs_kept_as_tensorflow(tmp_path):
    """0006 adds runs.backend; runs from before it keep every value and read as tensorflow (the
    only backend a worker ran then)."""
    from cnn_ablation.config import RunConfig
    from cnn_ablation.jobs.launch import submit
    from cnn_ablation.run_report import run_dict
    from cnn_ablation.storage.runs import find_run

    url = f"sqlite:///{tmp_path / 'v5.db'}"
    engine = get_engine(url)
    (run_id,) = submit(engine, [RunConfig(dataset="synthetic")])
    with engine.begin() as conn:
        back_to_0006(conn)
        conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN backend")
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0005'")
    engine.dispose()
    get_engine.cache_clear()
    again = get_engine(url)
    assert schema_differences(url) == []
    run = find_run(again, run_id)
    assert run.backend is None and run.status == "queued" and run.dataset == "synthetic"
    assert run_dict(run.__dict__)["backend"] == "tensorflow"


def test_a_0006_database_gets_each_runs_epoch_aggregates_from_its_epochs(tmp_path):
    """0007 stores each run's epoch aggregates on the run; runs from before it get them from
    their epoch rows (an epoch without validation metrics last, a run without epochs), and
    the deletion counter starts at 0."""
    url = f"sqlite:///{tmp_path / 'v6.db'}"
    engine = get_engine(url)
    two, none = submit(engine, [RunConfig(dataset="synthetic"), RunConfig(dataset="synthetic",
                                                                           seed=1)])
    with engine.begin() as conn:
        back_to_0006(conn)
        for epoch, acc, val in ((1, 0.4, 0.6), (2, 0.5, None)):
            conn.exec_driver_sql(
                "INSERT INTO epoch_metrics (run_id, epoch, loss, accuracy, val_accuracy, "
                "seconds, recorded_at) VALUES (?, ?, 1.0, ?, ?, 1.0, 1.0)", (two, epoch, acc, val))
    engine.dispose()
    get_engine.cache_clear()
    again = get_engine(url)
    assert schema_differences(url) == []
    with again.connect() as conn:
        rows = {r[0]: r[1:] for r in conn.exec_driver_sql(
            "SELECT id, epochs_done, best_val_accuracy, last_epoch, final_val_accuracy, "
            "final_accuracy FROM runs")}
        counter = conn.exec_driver_sql("SELECT count(*) FROM run_deletions").scalar()
    assert rows[two] == (2, 0.6, 2, None, 0.5)
    assert rows[none] == (0, None, None, None, None)
    assert counter == 1
