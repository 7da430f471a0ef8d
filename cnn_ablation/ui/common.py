"""What every page shares: the engine, the worker banner, run labels, and formatting."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from cnn_ablation.report import duration_s, epoch_progress, format_duration
from cnn_ablation.report import pct as report_pct
from cnn_ablation.settings import settings
from cnn_ablation.worker import ensure_local_worker
from storage import get_engine, lifecycle, workers
from storage.status import RunStatus

REFRESH_S = 2.0  # live parts of a page re-read the database this often while runs are active


@st.cache_resource
def _engine(url: str) -> Engine:
    return get_engine(url)


def engine_or_stop() -> Engine:
    """The database, or an explanation of what is wrong with it and a stop."""
    url = settings().database_url
    try:
        engine = _engine(url)
        lifecycle.reap_stale(engine)
        return engine
    except SQLAlchemyError as exc:
        st.error(f"**The database cannot be used.**  \n`{url}`  \n{type(exc).__name__}: "
                 f"{str(exc).splitlines()[0]}  \n\nCheck that the file is a SQLite database "
                 "that this user can write, or point `ABLATION_DATABASE_URL` (or `ABLATION_HOME`) "
                 "at another one, then reload the page.")
        st.stop()


def worker_banner(engine: Engine) -> None:
    """Sidebar status: live workers, or what to do when none is running."""
    started = ensure_local_worker(engine)
    alive = workers.live_workers(engine, max_age=3 * settings().heartbeat_s)
    if started:
        st.sidebar.success("Started a local worker: queued runs will train in the background.")
    elif alive.empty:
        st.sidebar.warning("**No worker is running**, so queued runs wait.  \nStart one in a "
                           "terminal: `python -m cnn_ablation worker`")
    else:
        slots = ", ".join(sorted(set(",".join(alive["slots"]).split(","))))
        st.sidebar.caption(f"Workers: {len(alive)} alive ({slots})")
    st.sidebar.caption(f"Database: `{settings().database_url}`")


def run_option(row: dict) -> str:
    """A run as one line in a picker: `#3 name · BN 1·1·0·0·1 · drop 0.5 · synthetic · running`."""
    name = f" {row['name']}" if row.get("name") else ""
    return f"#{row['id']}{name} · {row['label']} · {row['dataset']} · {row['status']}"


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
        "status": frame["status"],
        "epoch": [epoch_progress(r) for r in records],
        "progress": [_progress_fraction(r) for r in records],
        "best val acc": 100 * pd.to_numeric(frame["best_val_accuracy"]),
        "final val acc": 100 * pd.to_numeric(frame["final_val_accuracy"]),
        "test acc": 100 * pd.to_numeric(frame["test_accuracy"]),
        "duration": [format_duration(duration_s(r)) for r in records],
        "device": frame["device"].fillna(""),
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
    "status": st.column_config.TextColumn(width="small"),
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
