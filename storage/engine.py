"""One URL chooses the database; engines get SQLite's pragmas; `session_scope()` commits or rolls back.

SQLite rules (see ENGINEERING.md): WAL so the web app reads while a worker writes, a busy timeout,
foreign keys on, and write transactions that BEGIN IMMEDIATE: a deferred read-then-write
transaction fails at once with "database is locked" under WAL whatever the timeout. Read-only
sessions (`write=False`) begin DEFERRED so page refreshes never queue behind training writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_MS = 30_000


def database_url() -> str:
    """`ABLATION_DATABASE_URL`, else SQLite at `$ABLATION_HOME/ablation.db` (home: ./ablation-data)."""
    url = os.environ.get("ABLATION_DATABASE_URL")
    if url:
        return url
    home = Path(os.environ.get("ABLATION_HOME", "./ablation-data")).expanduser().resolve()
    return f"sqlite:///{home / 'ablation.db'}"


def _sqlite_rules(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a commit is one fsync less
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    """An engine for `url` (default: `database_url()`), schema created on first use."""
    url = url or database_url()
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        _sqlite_rules(engine)
    from storage.models import Base

    Base.metadata.create_all(engine)
    return engine


@lru_cache(maxsize=16)
def _sessionmaker(engine: Engine, write: bool) -> sessionmaker:
    bind = engine if write else engine.execution_options(sqlite_begin="DEFERRED")
    return sessionmaker(bind=bind, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None, write: bool = True) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    session = _sessionmaker(engine or get_engine(), write)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
