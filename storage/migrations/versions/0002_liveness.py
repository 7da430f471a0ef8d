"""Liveness, cancel modes, resumable runs, ids never reused.

runs gains cancel_mode, progress_at, phase, log_path, checkpoint_path, resume_epoch, notes; runs
and studies get AUTOINCREMENT on SQLite (a deleted run's id is never given out again), which
SQLite can only do by rebuilding the table (batch mode, foreign keys off: see storage.migrate).

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEW_RUN_COLUMNS = (
    sa.Column("cancel_mode", sa.String(length=16), nullable=True),
    sa.Column("progress_at", sa.Float(), nullable=True),
    sa.Column("phase", sa.String(length=20), nullable=True),
    sa.Column("log_path", sa.String(length=500), nullable=True),
    sa.Column("checkpoint_path", sa.String(length=500), nullable=True),
    sa.Column("resume_epoch", sa.Integer(), nullable=True),
    sa.Column("notes", sa.Text(), nullable=True),
)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    autoincrement = {"sqlite_autoincrement": True} if sqlite else {}
    with op.batch_alter_table("runs", recreate="always" if sqlite else "auto",
                              table_kwargs=autoincrement) as batch:
        for column in NEW_RUN_COLUMNS:
            batch.add_column(column._copy())
    if sqlite:
        with op.batch_alter_table("studies", recreate="always", table_kwargs=autoincrement):
            pass


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for column in NEW_RUN_COLUMNS:
            batch.drop_column(column.name)
