"""The database's clock: every stored time (created, started, heartbeat, progress, finished) is
written as the database's "now", and staleness is judged against it, so hosts whose clocks
disagree (or a laptop that slept) never make a live run look dead. Times are UNIX seconds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Float, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class db_now(FunctionElement[float]):  # noqa: N801 (reads like the SQL function it renders)
    """SQL for the database's current time in UNIX seconds (a float, sub-second)."""

    type = Float()
    inherit_cache = True


@compiles(db_now, "sqlite")
def _sqlite_now(element: Any, compiler: Any, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(db_now, "postgresql")
def _postgresql_now(element: Any, compiler: Any, **kw: Any) -> str:
    # clock_timestamp(): the time now, not the start of the transaction (now() would be)
    return "(EXTRACT(EPOCH FROM clock_timestamp())::float8)"


def now(engine: Engine) -> float:
    """The database's time now, for comparisons made in Python."""
    with engine.connect() as conn:
        value = conn.execute(select(db_now())).scalar_one()
        conn.rollback()
    return float(value)
