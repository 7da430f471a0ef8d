"""The database, one module per purpose.

engine (engines, sessions, SQLite rules) · models (tables) · status (RunStatus and its allowed
transitions) · records (the dataclasses storage returns) · runs (create/find/list/delete) ·
lifecycle (every state change of a run) · listings (the runs table's page, sort and rows, for
pages and CLI) · polling (what pages poll: has anything changed?) · lookups (small questions:
datasets and tags in use, labels, variants, runs of a config) · run_filters (which runs a listing
holds) · curves (epoch, per-layer and step series) · workers · studies.
"""

from cnn_ablation.storage.engine import get_engine, session_scope

__all__ = ["get_engine", "session_scope"]
