"""Runs keep their epoch aggregates (epochs done, best validation accuracy, the last epoch and its
values), which `record_epoch` updates with each epoch, and indexes for what listings sort and
filter by: at 100,000 runs x 50 epochs, sorting the Runs page by best validation accuracy had to
aggregate 5 million epoch rows and sort every run on each visit (over a second); from the index
a page reads its 50 entries. Also indexes that answer the pickers' questions without reading the
runs: the datasets in use (the Runs page's filter), the tags of tagged runs only (its tag
filter), and each config with its label and dataset (Compare's configs; it replaces the index
on the config alone, which it starts with). And `run_deletions`, one row counting the deletes of
runs: what pages poll every second no longer counts the runs to see that one went.

The aggregates of the runs already stored are computed from their epochs here, once.

Revision ID: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SORTED = ("best_val_accuracy", "final_val_accuracy", "test_accuracy")


def upgrade() -> None:
    # Plain ADD COLUMNs (no table rebuild on SQLite: batch mode only rebuilds when it must).
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("epochs_done", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("best_val_accuracy", sa.Float(), nullable=True))
        batch.add_column(sa.Column("last_epoch", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("final_val_accuracy", sa.Float(), nullable=True))
        batch.add_column(sa.Column("final_accuracy", sa.Float(), nullable=True))
        batch.add_column(sa.Column("final_val_loss", sa.Float(), nullable=True))
    mine = "FROM epoch_metrics e WHERE e.run_id = runs.id"
    op.execute(f"UPDATE runs SET epochs_done = (SELECT count(*) {mine}), "
               f"best_val_accuracy = (SELECT max(e.val_accuracy) {mine}), "
               f"last_epoch = (SELECT max(e.epoch) {mine}) "
               f"WHERE EXISTS (SELECT 1 {mine})")
    last = f"{mine} AND e.epoch = runs.last_epoch"
    op.execute(f"UPDATE runs SET final_val_accuracy = (SELECT e.val_accuracy {last}), "
               f"final_accuracy = (SELECT e.accuracy {last}), "
               f"final_val_loss = (SELECT e.val_loss {last}) "
               "WHERE last_epoch IS NOT NULL")
    # Best first, runs without the value last, ties newest first (SQLite's descending order
    # puts NULLs last by itself and refuses the words in an index).
    nulls_last = "" if op.get_bind().dialect.name == "sqlite" else " NULLS LAST"
    for column in SORTED:
        op.execute(f"CREATE INDEX ix_runs_{column} ON runs ({column} DESC{nulls_last}, id DESC)")
    op.create_index("ix_runs_dataset", "runs", ["dataset"])
    op.create_index("ix_runs_variant", "runs", ["variant_hash", "label", "dataset", "id"])
    op.drop_index("ix_runs_variant_hash", table_name="runs")  # the new one starts with it
    op.execute("CREATE INDEX ix_runs_tagged ON runs (tags_json) WHERE tags_json != '[]'")
    op.create_table("run_deletions", sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("deletions", sa.Integer(), nullable=False))
    op.execute("INSERT INTO run_deletions (id, deletions) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("run_deletions")
    op.create_index("ix_runs_variant_hash", "runs", ["variant_hash"])
    for name in ("ix_runs_variant", "ix_runs_tagged", "ix_runs_dataset",
                 *(f"ix_runs_{c}" for c in SORTED)):
        op.drop_index(name, table_name="runs")
    with op.batch_alter_table("runs") as batch:
        for column in ("final_val_loss", "final_accuracy", "final_val_accuracy", "last_epoch",
                       "best_val_accuracy", "epochs_done"):
            batch.drop_column(column)
