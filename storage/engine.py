"""Engines and sessions: SQLite's pragmas and locking rules, and `session_scope()`.

SQLite rules: WAL so the web app reads while a worker writes, a busy timeout, foreign keys on, and
write transactions that BEGIN IMMEDIATE: a deferred read-then-write transaction fails at once with
"database is locked" under WAL, whatever the timeout. Read-only sessions (`write=False`) begin
DEFERRED so page refreshes never queue behind training writes. The URL comes from the caller
(`cnn_ablation.settings` reads it from the environment); storage reads no environment itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_MS = 30_000


def _sqlite_rules(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a commit is one fsync less
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """An engine for `url`, its schema created on first use (one engine per URL and process)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        _sqlite_rules(engine)
    from storage.models import Base

    Base.metadata.create_all(engine)
    return engine


@lru_cache(maxsize=16)
def _sessionmaker(engine: Engine, write: bool) -> sessionmaker[Session]:
    bind = engine if write else engine.execution_options(sqlite_begin="DEFERRED")
    return sessionmaker(bind=bind, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine, write: bool = True) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    session = _sessionmaker(engine, write)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
