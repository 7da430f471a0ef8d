"""Bring a database to the current schema (Alembic revisions in storage/migrations/versions/).

Every process that opens a database calls `upgrade(engine)`: a database already at `HEAD` costs
one query; an empty one gets the tables from the models and is stamped `HEAD` (Alembic's recipe
for new databases); an older one is upgraded revision by revision. Workers often start together,
so the upgrade runs under a lock: an advisory lock on PostgreSQL, a lock file beside a SQLite
file. A database made before migrations existed (tables but no `alembic_version`) is version 0001.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text

HEAD = "0007"
MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger(__name__)


def current_revision(conn: Connection) -> str | None:
    """The database's revision; "0001" for tables made before migrations; None when empty."""
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return "0001" if "runs" in tables else None


@contextlib.contextmanager
def _exclusive(engine: Engine, conn: Connection) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(724001)"))
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(724001)"))
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _alembic_config(conn: Connection):  # -> alembic.config.Config (imported only when needed)
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def upgrade(engine: Engine) -> None:
    """Bring `engine`'s database to HEAD (see the module docstring)."""
    with engine.execution_options(sqlite_begin="DEFERRED").connect() as conn:
        if current_revision(conn) == HEAD:
            return
    with engine.connect() as conn, _exclusive(engine, conn), _foreign_keys_off(conn):
        revision = current_revision(conn)  # again: another process may have done it meanwhile
        if revision != HEAD:
            _upgrade_from(conn, revision)
        if conn.in_transaction():
            conn.commit()


def _upgrade_from(conn: Connection, revision: str | None) -> None:
    from alembic import command

    from cnn_ablation.storage.models import Base

    config = _alembic_config(conn)
    if revision is None:
        Base.metadata.create_all(conn)
        command.stamp(config, HEAD)
        return
    if "alembic_version" not in inspect(conn).get_table_names():
        command.stamp(config, revision)
    log.info("upgrading database schema from %s to %s", revision, HEAD)
    command.upgrade(config, HEAD)


@contextlib.contextmanager
def _foreign_keys_off(conn: Connection) -> Iterator[None]:
    """SQLite: rebuilding a table drops the old one, which with foreign keys on would cascade
    into every epoch row. The pragma works only outside a transaction, so it goes straight to
    the driver before SQLAlchemy begins one, and is turned back on before the connection goes
    back to the pool."""
    if conn.dialect.name != "sqlite":
        yield
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        driver.execute("PRAGMA foreign_keys=ON")
