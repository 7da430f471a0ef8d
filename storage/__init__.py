"""The database: engine and sessions (engine.py), tables (models.py), every query (queries.py)."""

from storage.engine import database_url, get_engine, session_scope

__all__ = ["database_url", "get_engine", "session_scope"]
