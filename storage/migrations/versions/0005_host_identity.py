"""Workers state who they are on their own host's terms: `host_id` (machine id, boot id and pid
namespace: equal hostnames on two machines, or two containers, are told apart) and
`process_started_at` (the worker process's start time on its host's clock, compared with what
that host's psutil says, never with the database's clock).

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("host_id", sa.String(200), nullable=True))
        batch.add_column(sa.Column("process_started_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("process_started_at")
        batch.drop_column("host_id")
