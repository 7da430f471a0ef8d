"""Runs get tags and a free-text comment (renaming uses `name`); training loss within an epoch
is sampled into `step_metrics`.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("tags_json", sa.Text(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("comment", sa.Text(), nullable=True))
    op.create_table(
        "step_metrics",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "step"),  # its index serves lookups by run_id too
        sqlite_with_rowid=False,  # SQLite: rows stored once, in key order
    )


def downgrade() -> None:
    op.drop_table("step_metrics")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("comment")
        batch.drop_column("tags_json")
