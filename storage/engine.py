"""Engines and sessions: SQLite's pragmas and locking rules, and `session_scope()`.

SQLite rules: WAL so the web app reads while a worker writes, a busy timeout, foreign keys on, and
write transactions that BEGIN IMMEDIATE: a deferred read-then-write transaction fails at once with
"database is locked" under WAL, whatever the timeout. Read-only sessions (`write=False`) begin
DEFERRED so page refreshes never queue behind training writes. The URL comes from the caller
(`cnn_ablation.settings` reads it from the environment); storage reads no environment itself.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")
log = logging.getLogger(__name__)

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
    """An engine for `url`, its schema brought to the current revision (storage.migrate);
    one engine per URL and process."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        _sqlite_rules(engine)
    from cnn_ablation.storage.migrate import upgrade

    upgrade(engine)
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


BUSY_TIMEOUT_S = BUSY_TIMEOUT_MS / 1000


def is_locked(exc: BaseException) -> bool:
    """A write that waited the whole busy timeout for another writer's lock."""
    text = str(exc).lower()
    return isinstance(exc, OperationalError) and ("locked" in text or "busy" in text)


def is_disk_full(exc: BaseException) -> bool:
    """A write that failed because the disk (or the database's filesystem) is full."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc).lower()
    return "disk is full" in text or "no space left" in text


def retry_when_locked(call: Callable[[], T], what: str, give_up_after_s: float = 600.0) -> T:
    """`call()`, again with backoff while the database stays locked by another writer (a long
    transaction elsewhere must not fail a training run); other errors pass through."""
    delay, deadline = 0.5, time.monotonic() + give_up_after_s
    while True:
        try:
            return call()
        except OperationalError as exc:
            if not is_locked(exc) or time.monotonic() > deadline:
                raise
            log.warning("%s: database locked; retrying in %.1f s", what, delay)
            time.sleep(delay)
            delay = min(2 * delay, 10.0)


def rows_as_dicts(session: Any, query: Any) -> list[dict[str, Any]]:
    """Rows of a Core SELECT as dicts (through the session's connection: no ORM loading)."""
    result = session.connection().execute(query)
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]
