"""Every environment variable the project reads, in one table, parsed into one frozen object.

`settings()` is the only reader of `os.environ` for our own variables. It parses again only when
one of them changed (tests set them per test), so callers may call it wherever they need a value.
The README's configuration table is checked against `VARIABLES` by a test.
"""

from __future__ import annotations

import os
import re
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
             "database, dataset cache, logs (`logs/run-N.log`, `logs/worker-*.log`) and "
             "TensorBoard files (`tensorboard/run-N`)"),
    Variable("ABLATION_DATABASE_URL", None,
             "any SQLAlchemy URL; unset: `sqlite:///$ABLATION_HOME/ablation.db`"),
    Variable("ABLATION_START_WORKER", "1",
             "`0`: the dashboard does not start a local worker (you run workers yourself)"),
    Variable("ABLATION_HEARTBEAT_SECONDS", "5",
             "heartbeat interval; a run is \"worker lost\" after twice this"),
    Variable("ABLATION_CANCEL_GRACE_SECONDS", "15",
             "how long a cancelled run may take to stop before its process is killed"),
    Variable("ABLATION_NO_PROGRESS_SECONDS", "600",
             "a training process that reports no progress for this long is killed and its run failed"),
    Variable("ABLATION_GPU_MEMORY_MB", None,
             "a training process's GPU memory limit (set by a worker sharing a GPU between runs)"),
    Variable("ABLATION_MAX_EPOCHS", "1000", "the most epochs one run may ask for"),
    Variable("ABLATION_MAX_STUDY_RUNS", "5000", "the most runs one study may ask for (cells x "
             "seeds, or cells x max seeds with adaptive seeds)"),
    Variable("ABLATION_MAX_IMAGE_SIDE", "1024",
             "the largest image side (pixels) a folder dataset may hold or be resized to"),
    Variable("ABLATION_ADDRESS", "127.0.0.1",
             "where `make run` and the Docker image listen; beyond loopback a password is required"),
    Variable("ABLATION_PASSWORD", None,
             "the dashboard's password (required when it listens beyond loopback)"),
    Variable("ABLATION_DATA_ROOTS", "$ABLATION_HOME/folders",
             "folders (separated by `:`) under which the New run page accepts `folder:` datasets"),
    Variable("ABLATION_NETWORK_PATHS", None,
             "folders (separated by `:`) of Python modules whose `build_*` functions are networks"),
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
    no_progress_s: float
    max_epochs: int
    max_study_runs: int
    max_image_side: int
    address: str
    password: str | None
    data_roots: tuple[Path, ...]
    gpu_memory_mb: int | None = None
    network_paths: tuple[Path, ...] = ()

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def checkpoints(self) -> Path:
        """Where a run stopping mid-training keeps its checkpoint (`run-N.keras`)."""
        return self.home / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files, one folder per run (`run-N`): `tensorboard --logdir` this."""
        return self.home / "tensorboard"

    def tensorboard_dir(self, run_id: int) -> Path:
        return self.tensorboard / f"run-{run_id}"

    @property
    def dataset_cache(self) -> Path:
        return self.home / "datasets"

    @property
    def database_variable(self) -> str:
        """The variable that chose the database: its own URL, or the home it sits in."""
        derived = self.database_url == f"sqlite:///{self.home / 'ablation.db'}"
        return "ABLATION_HOME" if derived else "ABLATION_DATABASE_URL"


MAX_SECONDS = 7 * 24 * 3600  # any longer wait is a typo (and sleeping for inf raises)
MAX_WHOLE = 999_999_999


def _positive(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= MAX_SECONDS:  # NaN and inf fail too
        raise SettingsError(name, text, f"a number of seconds > 0 and at most {MAX_SECONDS:,} (7 days)")
    return value


def _whole(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_WHOLE:
        raise SettingsError(name, text, f"a whole number from 1 to {MAX_WHOLE:,}")
    return int(text)


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
        no_progress_s=_positive("ABLATION_NO_PROGRESS_SECONDS", get("ABLATION_NO_PROGRESS_SECONDS")),
        max_epochs=_whole("ABLATION_MAX_EPOCHS", get("ABLATION_MAX_EPOCHS")),
        max_study_runs=_whole("ABLATION_MAX_STUDY_RUNS", get("ABLATION_MAX_STUDY_RUNS")),
        max_image_side=_whole("ABLATION_MAX_IMAGE_SIDE", get("ABLATION_MAX_IMAGE_SIDE")),
        address=get("ABLATION_ADDRESS"),
        password=values.get("ABLATION_PASSWORD") or None,
        data_roots=tuple(
            Path(p.replace("$ABLATION_HOME", str(home))).expanduser().resolve()
            for p in get("ABLATION_DATA_ROOTS").split(os.pathsep) if p.strip()),
        network_paths=tuple(Path(p).expanduser().resolve() for p in
                            (values.get("ABLATION_NETWORK_PATHS") or "").split(os.pathsep)
                            if p.strip()),
        gpu_memory_mb=(_whole("ABLATION_GPU_MEMORY_MB", values["ABLATION_GPU_MEMORY_MB"] or "")
                       if values.get("ABLATION_GPU_MEMORY_MB") else None),
    )


@lru_cache(maxsize=8)
def _cached(items: tuple[tuple[str, str | None], ...], cwd: str) -> Settings:
    return _parse(dict(items))  # `cwd` only keys the cache: relative paths resolve against it


def settings() -> Settings:
    """The settings as the environment gives them now (parsed once per distinct environment)."""
    return _cached(tuple((name, os.environ.get(name)) for name in NAMES), _cwd())


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the working folder was removed: relative paths cannot be resolved anew
        return ""


# --- can the home and the database be used? (the CLI asks before it writes anything) ------------
def shown_url(url: str) -> str:
    """`url` as it may be printed: its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: hide whatever may be a user and password
        return re.sub(r"^(.*?://)?.*@", lambda m: (m.group(1) or "") + "***@", url)


def _folder_problem(path: Path) -> str | None:
    """Why `path` cannot be (made into) a folder this user writes in; None when it can."""
    try:
        if path.exists():
            if not path.is_dir():
                return f"{path} is a file, not a folder"
            if not os.access(path, os.W_OK | os.X_OK):
                return f"this user cannot write in {path}"
            return None
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            return f"{parent} is a file, not a folder"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"{path} cannot be made: this user cannot write in {parent}"
        return None
    except OSError as exc:  # e.g. a name too long for the file system
        return f"{path}: {exc.strerror or exc}"


def _sqlite_problem(database: str) -> str | None:
    path = Path(database).expanduser()
    try:
        if path.is_dir():
            return f"the database {path} is a folder, not a file"
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            return f"this user cannot read and write {path}"
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    problem = _folder_problem(path.parent)  # SQLite writes its -wal and -shm files beside it
    return f"the database's folder: {problem}" if problem else None


def storage_problem(s: Settings | None = None) -> SettingsError | None:
    """What stops this process from using its home and database, found without writing anything:
    a home that is a file or that this user cannot write, a URL that is not a URL, a database
    kind or driver not installed here, a SQLite file whose folder cannot be made or written.
    The error names the variable to change; a password in the URL is never shown."""
    s = s or settings()
    problem = _folder_problem(s.home)
    if problem:
        return SettingsError("ABLATION_HOME", str(s.home),
                             f"a folder this user can write in, or one it can make ({problem})")
    from sqlalchemy.engine import make_url

    var, shown = s.database_variable, shown_url(s.database_url)
    try:
        url = make_url(s.database_url)
    except Exception:
        return SettingsError(var, shown, "a database URL such as sqlite:////path/to/ablation.db or "
                                         "postgresql+psycopg://user:password@host/dbname")
    try:
        dialect = url.get_dialect()
    except Exception as exc:
        return SettingsError(var, shown, f"a URL whose database kind and driver SQLAlchemy knows "
                                         f"({url.drivername!r}: {_first_line(exc)})")
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        return SettingsError(var, shown, f"a URL whose driver is installed here ({url.drivername}: "
                                         f"{_first_line(exc)}; install it, or name one that is, "
                                         "e.g. postgresql+psycopg://...)")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        # each process would get its own empty database that vanishes when it exits: a run
        # queued there is never seen by a worker, and the command still said "queued"
        return SettingsError(var, shown, "a database that outlives this process: a SQLite file "
                                         "(sqlite:////path/to/ablation.db), not an in-memory one")
    if url.get_backend_name() == "sqlite" and not url.query.get("uri"):
        problem = _sqlite_problem(str(url.database))
        if problem:
            value = str(s.home) if var == "ABLATION_HOME" else shown
            return SettingsError(var, value, f"a database file this user can create or write "
                                             f"({problem})")
    return None


def database_error(exc: BaseException, s: Settings | None = None) -> SettingsError:
    """`exc` (raised while opening or using the database) as a one-line refusal that names the
    variable to change, without the URL's password."""
    s = s or settings()
    var = s.database_variable
    value = str(s.home) if var == "ABLATION_HOME" else shown_url(s.database_url)
    what = "a folder whose database (ablation.db)" if var == "ABLATION_HOME" else "a database"
    return SettingsError(var, value, f"{what} this user can open and write "
                                     f"({type(exc).__name__}: {_scrub(_first_line(exc), s)})")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _scrub(text: str, s: Settings) -> str:
    from sqlalchemy.engine import make_url

    try:
        password = make_url(s.database_url).password
    except Exception:
        return text
    return text.replace(str(password), "***") if password else text
