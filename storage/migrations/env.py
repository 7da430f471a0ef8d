"""Alembic environment: always run by storage.migrate with an open connection (no alembic.ini)."""

from alembic import context

from cnn_ablation.storage.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=True)  # SQLite's ALTER TABLE needs batch mode
with context.begin_transaction():
    context.run_migrations()
