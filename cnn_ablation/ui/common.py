"""What every page shares: the engine, the worker banner, run labels, and formatting.

User text (run names, folder paths, messages that quote them) goes through `plain()` before it
reaches anything Streamlit renders as Markdown, so a name such as `[click](http://evil)` shows
as typed instead of as a live link."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from cnn_ablation.jobs.liveness import reap_lost_runs
from cnn_ablation.jobs.worker import ensure_local_worker
from cnn_ablation.run_report import (
    csv_text,
    device_text,
    duration_s,
    epoch_progress,
    format_duration,
)
from cnn_ablation.run_report import pct as report_pct
from cnn_ablation.settings import database_error, settings, shown_url, storage_problem
from cnn_ablation.storage import curves, get_engine, listings, lookups, workers
from cnn_ablation.storage.listings import RunsPage
from cnn_ablation.storage.run_filters import RunFilter
from cnn_ablation.storage.status import RunStatus
from cnn_ablation.ui.figures import ChartOptions

REFRESH_S = 2.0  # live parts of a page re-read the database this often while runs are active
LIVE_S = 1.0  # the Runs page asks "anything new?" (one indexed query) this often meanwhile


@st.cache_resource
def _engine(url: str) -> Engine:
    return get_engine(url)


# --- caches shared by every session (bounded; keyed by what their answer depends on) ------------
def database_key(engine: Engine) -> str:
    """The engine's URL, in full: what the shared caches below are keyed by."""
    return engine.url.render_as_string(hide_password=False)


@st.cache_data(max_entries=256, show_spinner=False)
def runs_page(url: str, token: tuple, filters: tuple, sort: str, page: int) -> RunsPage:
    """A page of the Runs listing (listings.runs_page), shared by the sessions that show the
    same page while the database's change token stays the same."""
    return listings.runs_page(_engine(url), RunFilter(*filters), sort, page)


@st.cache_data(max_entries=16, show_spinner=False)
def datasets_in_use(url: str, runs_version: tuple[int, int]) -> list[str]:
    return lookups.datasets_in_use(_engine(url))


PICKER_RUNS = 1000  # a run picker offers the newest this many (and any run chosen otherwise)


@st.cache_resource(max_entries=4, show_spinner=False)
def run_labels(url: str, runs_version: tuple[int, int]) -> dict[int, str]:
    """`#id name-or-label` of the newest PICKER_RUNS runs (a picker's options; one shared,
    read-only dict): at 100,000 runs, every run's label cost a full read of the runs on each
    new run, and 100,000 options on every redraw of the picker."""
    return label_dict(lookups.run_labels(_engine(url), newest=PICKER_RUNS))


def labels_of(engine: Engine, ids: list[int]) -> dict[int, str]:
    """`#id name-or-label` of these runs (those that exist): a picker's other chosen runs."""
    return label_dict(lookups.run_labels(engine, ids=ids)) if ids else {}


def label_dict(rows: list[tuple[int, str, str]]) -> dict[int, str]:
    return {i: f"#{i} {name or label}" for i, name, label in rows}


@st.cache_data(max_entries=16, show_spinner=False)
def variants(url: str, runs_version: tuple[int, int]) -> list[dict]:
    return lookups.variants(_engine(url))


@st.cache_data(max_entries=64, show_spinner=False)
def layer_stats(url: str, run_id: int, last_epoch: int) -> pd.DataFrame:
    return curves.layer_stats_frame(_engine(url), [run_id])


def engine_or_stop() -> Engine:
    """The database, or an explanation of what is wrong with it and a stop."""
    url = settings().database_url
    problem = storage_problem()
    if problem is None:
        try:
            engine = _engine(url)
            reap_lost_runs(engine)
            return engine
        except (SQLAlchemyError, OSError, ImportError) as exc:
            problem = database_error(exc)
    st.error(f"**The database cannot be used.**  \n{plain(str(problem))}  \n\nCheck that the "
             "file is a SQLite database that this user can write, or point "
             "`ABLATION_DATABASE_URL` (or `ABLATION_HOME`) at another one, then reload the page.")
    st.stop()


def worker_banner(engine: Engine) -> None:
    """Sidebar status: live workers, or what to do when none is running."""
    started = ensure_local_worker(engine)
    alive = workers.live_workers(engine, max_age=3 * settings().heartbeat_s)
    if started:
        st.sidebar.success("Started a local worker: queued runs will train in the background.")
    elif alive.empty:
        # on the page itself, not only in the (collapsed) sidebar: queued runs wait for nothing
        st.warning("**No worker is running**, so queued runs wait.  \nStart one in a "
                   "terminal: `python -m cnn_ablation worker`")
    else:
        slots = ", ".join(sorted(set(",".join(alive["slots"]).split(","))))
        st.sidebar.caption(f"Workers: {len(alive)} alive ({slots})")
    st.sidebar.caption(f"Database: {plain(masked_url(settings().database_url))}")


def masked_url(url: str) -> str:
    """A database URL as it may be shown: its password replaced by `***`."""
    return shown_url(url)


_INLINE_SPECIALS = re.compile(r"([\\`*\[\]<>~|$&@{}])")
_LONE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")  # `_` not between two letters/digits
_COLON_BEFORE_TEXT = re.compile(r":(?=\S)")  # emoji `:x:`, icons `:material/x:`, `http://`
_WWW_DOT = re.compile(r"(?i)\b(www)\.")  # GitHub-flavoured autolinks start with `www.` too
# GFM also links bare `http://x`, `www.x` and `a@b.c` found in the text after escapes are undone;
# it does so only where the scheme or `www` follows a space or punctuation (or starts the text) and
# the `@` follows the address' name directly. An invisible word joiner (U+2060) in front of each
# breaks that condition without changing what is seen.
_AUTOLINK_START = re.compile(r"(?i)(?<![^\W_])([a-z0-9]+\\?:(?=//)|www\\?\.)")
_AT = re.compile(r"\\?@")  # after the escape above: `\@`
WORD_JOINER = "\u2060"
_LINE_START = re.compile(r"^(\s*)([#>+=-]|\d+(?=[.)]))", re.MULTILINE)


def plain(text: object) -> str:
    """`text` escaped so that Streamlit's Markdown shows it as typed: no links, emphasis, code,
    LaTeX, colour directives, emoji or icon shortcodes, autolinks, headings or lists. Every escape
    is a backslash before ASCII punctuation, which Markdown shows as the character itself, or an
    invisible word joiner before a bare URL or e-mail address. An underscore inside a word
    (`learning_rate`) and a colon before a space stay as they are: they cannot start any markup."""
    out = _INLINE_SPECIALS.sub(r"\\\1", str(text))
    out = _LONE_UNDERSCORE.sub(r"\\_", out)
    out = _COLON_BEFORE_TEXT.sub(r"\\:", out)
    out = _WWW_DOT.sub(r"\1\\.", out)
    out = _AUTOLINK_START.sub(WORD_JOINER + r"\1", out)
    out = _AT.sub(lambda m: WORD_JOINER + m.group(0), out)
    out = _LINE_START.sub(_escape_line_start, out)
    return out


def _escape_line_start(match: re.Match[str]) -> str:
    indent, marker = match.group(1), match.group(2)
    if marker.isdigit():  # `1.` / `1)` starts a list: escape the punctuation after the digits
        return indent + marker + "\\"
    return indent + "\\" + marker


def roots_text(roots: tuple[Path, ...]) -> str:
    return ", ".join(str(r) for r in roots) or "(none)"


def folder_within_roots(text: str, roots: tuple[Path, ...] | None = None) -> tuple[Path | None, str]:
    """The folder a user typed, resolved (symlinks and `..` followed), if it lies under one of
    `roots` (default: ABLATION_DATA_ROOTS); else None and why not, in a sentence that names
    ABLATION_DATA_ROOTS and the roots. Nothing inside the folder is read."""
    roots = settings().data_roots if roots is None else roots
    allowed = (f"allowed: folders under {roots_text(roots)} (ABLATION_DATA_ROOTS, folders "
               f"separated by '{os.pathsep}'; change it and restart the dashboard to allow others)")
    try:
        resolved = Path(text.strip()).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte, ...
        return None, f"{text!r} is not a usable folder path ({exc}); {allowed}"
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        shown = str(resolved) if str(resolved) == text.strip() else f"{text.strip()} (= {resolved})"
        return None, f"{shown} is outside the folders this dashboard may read; {allowed}"
    return resolved, ""


CANCELLING = "cancelling…"


def shown_status(row: dict) -> str:
    """The status a user should see: `cancelling…` for a running run that was asked to stop
    (from the moment the request is stored until its process has stopped), else the status."""
    status = str(row["status"])
    if status == RunStatus.RUNNING and _true(row.get("cancel_requested")):
        return CANCELLING
    return status


def _true(value: object) -> bool:
    return bool(value) and not (isinstance(value, float) and pd.isna(value))


def run_option(row: dict) -> str:
    """A run as one line in a picker (plain text, never Markdown):
    `#3 name · BN 1·1·0·0·1 · drop 0.5 · synthetic · running`."""
    name = f" {row['name']}" if row.get("name") else ""
    return f"#{row['id']}{name} · {row['label']} · {row['dataset']} · {shown_status(row)}"


def epoch_text(row: dict) -> str:
    """Epochs done of all (`3/10`), with where a running run is: the batch of the running epoch,
    or how many test images are done while it is testing."""
    if row.get("status") == RunStatus.RUNNING and row.get("phase") == "testing" \
            and _number(row.get("progress_batches")):
        done = int(_number(row.get("progress_batch")) or 0)
        return f"{int(row.get('epochs_done') or 0)}/{row['epochs']} (testing {done:,}/" \
               f"{int(_number(row['progress_batches']) or 0):,})"
    return epoch_progress(row)


def _number(value: object) -> float | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return float(value)  # type: ignore[arg-type]


def pct(value: object) -> str:
    """A fraction as `71.9 %`, or an en dash when missing."""
    return report_pct(value, missing="–")


def runs_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The Runs table as a user reads it: one row per run, units in the headers."""
    records = frame.to_dict("records")
    return pd.DataFrame({
        "run": frame["id"],
        "name": frame["name"].fillna(""),
        "config": frame["label"],
        "dataset": frame["dataset"],
        "status": [shown_status(r) for r in records],
        "epoch": [epoch_text(r) for r in records],
        "progress": [_progress_fraction(r) for r in records],
        "best val acc": 100 * pd.to_numeric(frame["best_val_accuracy"]),
        "final val acc": 100 * pd.to_numeric(frame["final_val_accuracy"]),
        "test acc": 100 * pd.to_numeric(frame["test_accuracy"]),
        "duration": [format_duration(duration_s(r)) for r in records],
        "device": [device_text(r.get("device"), r.get("backend")) for r in records],
    })


def _progress_fraction(row: dict) -> float:
    epochs = row["epochs"] or 1
    done = float(row.get("epochs_done") or 0)
    if row["status"] == RunStatus.COMPLETED:
        return 1.0
    if row["status"] == RunStatus.RUNNING and not pd.isna(row.get("progress_batches")):
        batches = row["progress_batches"] or 1
        within = (row.get("progress_batch") or 0) / batches
        done = max(done, (row["progress_epoch"] or 1) - 1 + within)
    return min(done / epochs, 1.0)


TABLE_COLUMNS = {
    "run": st.column_config.NumberColumn(width="small"),
    "status": st.column_config.TextColumn(width=100),  # room for "cancelling…"
    "device": st.column_config.TextColumn(width="small"),
    "duration": st.column_config.TextColumn(width="small"),
    "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0,
                                                format="percent", width="small"),
    "name": st.column_config.TextColumn(width="small"),
    "epoch": st.column_config.TextColumn(width="small"),
    "best val acc": st.column_config.NumberColumn(format="%.1f %%", width="small"),
    "final val acc": st.column_config.NumberColumn(format="%.1f %%", width="small"),
    "test acc": st.column_config.NumberColumn(format="%.1f %%", width="small"),
}


# --- form values that survive page switches ------------------------------------------------------
KEPT = "_kept."  # prefix of the plain session-state copies of widget values


def restore(key: str, default: Any) -> str:
    """Before drawing the widget `key` (created without `value=`/`index=`): its value from this
    session's last visit to the page, else `default`. Streamlit drops a widget's state once a
    page without it is shown; the copy `keep` makes under `_kept.<key>` is plain session state,
    which it never drops. Returns `key`."""
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(KEPT + key, default)
    return key


def keep(*keys: str) -> None:
    """Copy the widgets' current values where `restore` finds them after a page switch."""
    for key in keys:
        if key in st.session_state:
            st.session_state[KEPT + key] = st.session_state[key]


# --- the controls above every curve chart --------------------------------------------------------
X_CHOICES = {"epoch": "Epoch", "step": "Step", "time": "Time"}


def chart_controls(key: str = "chart") -> ChartOptions:
    """One small row above the curves: EMA smoothing, log-scale loss, the x axis (epoch, step,
    wall time). Shared by Runs and Compare; what is chosen is kept for the session under
    `key`_smoothing, `key`_log and `key`_x."""
    smoothing_key = restore(f"{key}_smoothing", 0.0)
    log_key = restore(f"{key}_log", False)
    x_key = restore(f"{key}_x", "epoch")
    if st.session_state[x_key] not in X_CHOICES:
        st.session_state[x_key] = "epoch"
    row = st.columns([3, 2, 3], vertical_alignment="bottom")
    smoothing = row[0].slider("Smoothing", 0.0, 0.99, step=0.01, key=smoothing_key,
                              help="Exponential moving average as in TensorBoard (0 = raw). "
                                   "The raw curve stays faint behind the smoothed one.")
    log_loss = row[1].toggle("Log loss", key=log_key, help="Loss on a logarithmic scale")
    x = row[2].radio("x axis", list(X_CHOICES), horizontal=True, key=x_key,
                     format_func=X_CHOICES.get,
                     help="Epoch; step: training batches, with the training loss sampled "
                          "within epochs where it was recorded; time: wall time since the "
                          "run's first epoch began")
    keep(smoothing_key, log_key, x_key)
    return ChartOptions(smoothing=float(smoothing), log_loss=bool(log_loss), x=str(x))


def step_frame(engine: Engine, run_ids: list[int], options: ChartOptions) -> pd.DataFrame | None:
    """Sampled training steps of `run_ids` (curves.step_rows) when the chosen x axis draws
    them (step, time); None on the epoch axis, where they are not read at all."""
    if options.x == "epoch" or not run_ids:
        return None
    return _steps(database_key(engine), tuple(run_ids))


@st.cache_data(ttl=5, max_entries=64, show_spinner=False)
def _steps(url: str, run_ids: tuple[int, ...]) -> pd.DataFrame | None:
    """Shared by the sessions drawing the same runs for 5 s: workers write sampled steps every
    5 s, so reading them on every 1 s refresh would only repeat the same rows."""
    rows = curves.step_rows(_engine(url), list(run_ids))
    return pd.DataFrame(rows) if rows else None


def page_file(name: str) -> str:
    """A page's script as an absolute path, for st.page_link / st.switch_page: Streamlit resolves
    a relative one against the main script's folder, which is the repository's root under
    `streamlit run app.py` but cnn_ablation/ui when the packaged dashboard is served."""
    return str(Path(__file__).with_name(f"{name}.py"))


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 run`, `2 runs`, `1,200 runs` (`many` for an irregular plural)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def iso_time(value: object) -> str:
    """A stored time (seconds since the epoch, database clock) as ISO 8601 in UTC; '' if none."""
    number = _number(value)
    if number is None:
        return ""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(number, tz=UTC).isoformat(timespec="seconds")


def epochs_csv(epochs: pd.DataFrame, runs: list[dict]) -> str:
    """The Compare download: every epoch of `runs` (listing rows) with what names its run: run
    id and name, config label, dataset, status, created/started/finished as ISO 8601 UTC, and
    every field of its config (learning rate, batch size, seed, limit, switches, ...) where the
    rows carry `config_json`."""
    import json

    named = pd.DataFrame({
        "run_id": [r["id"] for r in runs],
        "run_name": [r.get("name") or "" for r in runs],
        "config": [r["label"] for r in runs],
        "dataset": [r["dataset"] for r in runs],
        "status": [r["status"] for r in runs],
        "created_at": [iso_time(r.get("created_at")) for r in runs],
        "started_at": [iso_time(r.get("started_at")) for r in runs],
        "finished_at": [iso_time(r.get("finished_at")) for r in runs],
    })
    configs = [json.loads(r["config_json"]) if r.get("config_json") else {} for r in runs]
    for field in dict.fromkeys(k for c in configs for k in c):
        if field in named or field in epochs:
            continue
        named[field] = [_csv_value(c.get(field)) for c in configs]
    return csv_text(named.merge(epochs.astype({"run_id": "int64"}), on="run_id"))


def _csv_value(value: Any) -> Any:
    """A config value as one CSV cell: lists as `1,0,0,0,1` (pairs as `layer=rate`)."""
    if isinstance(value, list):
        return ",".join("=".join(map(str, v)) if isinstance(v, list) else str(v) for v in value)
    return value
