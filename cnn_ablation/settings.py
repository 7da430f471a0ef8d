"""Every environment variable the project reads, in one table, parsed into one frozen object.

`settings()` is the only reader of `os.environ` for our own variables. It parses again only when
one of them changed (tests set them per test), so callers may call it wherever they need a value.
The README's configuration table is checked against `VARIABLES` by a test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None  # None: unset means "not given" (see meaning)
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable("ABLATION_HOME", "./ablation-data",
             "database, dataset cache and logs (`logs/run-N.log`, `logs/worker-*.log`)"),
    Variable("ABLATION_DATABASE_URL", None,
             "any SQLAlchemy URL; unset: `sqlite:///$ABLATION_HOME/ablation.db`"),
    Variable("ABLATION_START_WORKER", "1",
             "`0`: the dashboard does not start a local worker (you run workers yourself)"),
    Variable("ABLATION_HEARTBEAT_SECONDS", "5",
             "heartbeat interval; a run is \"worker lost\" after twice this"),
    Variable("ABLATION_CANCEL_GRACE_SECONDS", "15",
             "how long a cancelled run may take to stop before its process is killed"),
    Variable("KERAS_HOME", "~/.keras", "Keras' cache; datasets are looked for in its `datasets/`"),
    Variable("CUDA_VISIBLE_DEVICES", None,
             "GPUs a worker may use; unset: every GPU that `nvidia-smi` lists"),
)
NAMES = tuple(v.name for v in VARIABLES)


def readme_table() -> str:
    """The README's configuration table, made from `VARIABLES` (a test keeps the two equal)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{v.name}` | {f'`{v.default}`' if v.default else 'unset'} | {v.meaning} |"
             for v in VARIABLES]
    return "\n".join(rows)
DEFAULTS = {v.name: v.default for v in VARIABLES}


class SettingsError(ValueError):
    """An environment variable with a value that cannot be used; names the variable."""

    def __init__(self, name: str, given: str, allowed: str):
        self.field = name
        super().__init__(f"{name}: {given!r} is not allowed; allowed: {allowed}")


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    heartbeat_s: float
    cancel_grace_s: float
    start_worker: bool
    keras_datasets: Path
    visible_gpus: tuple[str, ...] | None  # None: not restricted by CUDA_VISIBLE_DEVICES

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def dataset_cache(self) -> Path:
        return self.home / "datasets"


def _positive(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise SettingsError(name, text, "a number of seconds > 0")
    return value


def _parse(values: dict[str, str | None]) -> Settings:
    def get(name: str) -> str:
        value = values.get(name)
        return value if value not in (None, "") else str(DEFAULTS[name])

    home = Path(get("ABLATION_HOME")).expanduser().resolve()
    url = values.get("ABLATION_DATABASE_URL") or f"sqlite:///{home / 'ablation.db'}"
    start = get("ABLATION_START_WORKER")
    if start not in ("0", "1"):
        raise SettingsError("ABLATION_START_WORKER", start, "0 | 1")
    visible = values.get("CUDA_VISIBLE_DEVICES")
    gpus = None if visible is None else tuple(
        g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1")
    return Settings(
        home=home, database_url=url,
        heartbeat_s=_positive("ABLATION_HEARTBEAT_SECONDS", get("ABLATION_HEARTBEAT_SECONDS")),
        cancel_grace_s=_positive("ABLATION_CANCEL_GRACE_SECONDS",
                                 get("ABLATION_CANCEL_GRACE_SECONDS")),
        start_worker=start == "1",
        keras_datasets=Path(get("KERAS_HOME")).expanduser() / "datasets",
        visible_gpus=gpus,
    )


@lru_cache(maxsize=8)
def _cached(items: tuple[tuple[str, str | None], ...]) -> Settings:
    return _parse(dict(items))


def settings() -> Settings:
    """The settings as the environment gives them now (parsed once per distinct environment)."""
    return _cached(tuple((name, os.environ.get(name)) for name in NAMES))
