"""Runs state the Keras backend they trained on (`runs.backend`: tensorflow, jax or torch), set
when a worker claims the run (`worker --backend`). Runs from before it trained on TensorFlow, the
only backend a worker ran then; they keep NULL, read as tensorflow. A run resumed from its
checkpoint by a worker on another backend says both ("tensorflow+jax").

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("backend", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("backend")
