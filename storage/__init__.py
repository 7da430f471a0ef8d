"""The database, one module per purpose.

engine (engines, sessions, SQLite rules) · models (tables) · status (RunStatus and its allowed
transitions) · records (the dataclasses storage returns) · runs (create/find/list/delete) ·
lifecycle (every state change of a run) · read_models (frames for pages and CLI) · run_filters
(which runs a listing holds) · workers · studies.
"""

from storage.engine import get_engine, session_scope

__all__ = ["get_engine", "session_scope"]
