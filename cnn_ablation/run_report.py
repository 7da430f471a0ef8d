"""Runs as text and JSON for the command line (the pages draw the same rows as tables).

Plain Python on rows as dicts (`storage.listings.run_rows`, `storage.curves.epoch_rows`): the CLI
starts without pandas. Tables print as pandas' `DataFrame.to_string(index=False)` would print them."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from cnn_ablation.storage.records import Run
from cnn_ablation.storage.status import RunStatus


def duration_s(row: dict[str, Any]) -> float | None:
    start = row.get("started_at")
    if start is None or (isinstance(start, float) and math.isnan(start)):
        return None
    end = row.get("finished_at")
    if end is None or (isinstance(end, float) and math.isnan(end)):
        end = time.time() if row.get("status") == RunStatus.RUNNING else None
    return None if end is None else end - start


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def epoch_progress(row: dict[str, Any]) -> str:
    """`3/10` epochs done, plus the running epoch's batch position, e.g. `3/10 (4: 120/1407)`."""
    done = int(row.get("epochs_done") or 0)
    text = f"{done}/{row['epochs']}"
    if row.get("status") == RunStatus.RUNNING and _present(row.get("progress_batches")):
        text += f" (ep {int(row['progress_epoch'])}: {int(row['progress_batch'] or 0)}/" \
                f"{int(row['progress_batches'])})"
    return text


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


RUN_DICT_KEYS = ["id", "name", "label", "dataset", "preset", "seed", "status", "epochs",
                 "epochs_done", "progress_epoch", "progress_batch", "progress_batches",
                 "best_val_accuracy", "final_val_accuracy", "test_accuracy", "test_loss", "device",
                 "host", "params", "error", "study_id", "created_at", "started_at", "finished_at"]
# The run columns `print_runs` and `run_dict` read (storage.listings adds the epoch aggregates):
# `runs` reads no more of 100,000 runs than it prints.
LISTED_COLUMNS = [k for k in RUN_DICT_KEYS if k not in ("epochs_done", "best_val_accuracy",
                                                         "final_val_accuracy")] + ["backend"]


def run_dict(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: _clean(row.get(k)) for k in RUN_DICT_KEYS}
    out["backend"] = row.get("backend") or "tensorflow"  # NULL: before backends were stored
    out["duration_s"] = duration_s(row)
    return out


def pct(value, missing: str = "") -> str:
    """A fraction as `71.9 %`; `missing` for None/NaN."""
    return missing if not _present(value) else f"{100 * value:.1f} %"


def text_table(columns: dict[str, Sequence[Any]],
               float_format: Callable[[float], str] | None = None) -> str:
    """Columns as a text table, as `pandas.DataFrame.to_string(index=False)` prints them: cells
    and headers right-aligned to the column's width, one space between columns; a column of
    numbers is one wider than its header (pandas keeps room for a sign). Missing numbers print
    as `NaN` (`None` in a column without any number)."""
    justified = []
    for name, values in columns.items():
        kinds = {type(v) for v in values}
        numeric = bool(kinds & {int, float}) and kinds <= {int, float, type(None)}
        if kinds <= {str, int}:  # the common case: nothing missing, nothing to format
            cells = [str(v) for v in values]
        else:
            missing = "NaN" if numeric else "None"
            cells = [missing if v is None or (isinstance(v, float) and math.isnan(v))
                     else float_format(v) if float_format and isinstance(v, float) else str(v)
                     for v in values]
        width = max([len(name) + numeric, *map(len, cells)])
        justified.append([name.rjust(width), *(c.rjust(width) for c in cells)])
    return "\n".join(" ".join(line) for line in zip(*justified, strict=True))


def print_runs(rows: Sequence[dict[str, Any]], filtered: str = "", total: int = 0) -> None:
    """The runs as a table. With none to show: why (`filtered`: what the listing asked for, e.g.
    "status running"; `total`: how many runs there are in all)."""
    if not rows and filtered and total:
        print(f"no runs match ({filtered}); {total:,} run{'s' if total != 1 else ''} in all: "
              "`python -m cnn_ablation runs` lists them")
        return
    if not rows:
        print("no runs yet: `python -m cnn_ablation submit --dataset synthetic --epochs 2` "
              "queues one")
        return
    print(text_table({
        "id": [r["id"] for r in rows],
        "name": [r["name"] for r in rows],
        "config": [r["label"] for r in rows],
        "dataset": [r["dataset"] for r in rows],
        "status": [str(r["status"]) for r in rows],
        "epoch": [epoch_progress(r) for r in rows],
        "best val": [pct(r.get("best_val_accuracy")) for r in rows],
        "test acc": [pct(r.get("test_accuracy")) for r in rows],
        "time": [format_duration(duration_s(r)) for r in rows],
        "device": [device_text(r.get("device"), r.get("backend")) for r in rows],
    }))


def device_text(device: object, backend: object) -> str:
    """A run's device as lists show it: "cpu", "gpu:0", or with the Keras backend when it is not
    TensorFlow (the default, and the only one before backends were stored): "gpu:0 · jax"."""
    shown = device if isinstance(device, str) and device else ""
    if isinstance(backend, str) and backend and backend != "tensorflow":
        return f"{shown} · {backend}" if shown else backend
    return shown


EPOCH_TABLE = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def print_run(run: Run, epochs: Sequence[dict[str, Any]], as_json: bool = False) -> None:
    """One run: its record, config and test report, and `epochs` (dicts as
    `storage.curves.epoch_rows` gives them), as text or JSON."""
    record = {k: v for k, v in run.__dict__.items() if k not in ("config_json", "test_report_json")}
    record["config"] = run.config
    record["test_report"] = run.test_report
    record["duration_s"] = duration_s(run.__dict__)
    record["epoch_metrics"] = [{k: _clean(v) for k, v in e.items() if k != "run_id"}
                               for e in epochs]
    if as_json:
        print(json.dumps(record, indent=1))
        return
    print(f"run {run.id}  {run.name or ''}".rstrip())
    print(f"  status    {run.status}" + (f"  ({run.error})" if run.error else ""))
    print(f"  config    {run.label} · {run.dataset} · {run.preset}")
    print("            " + json.dumps(run.config, sort_keys=True))
    print(f"  device    {run.device or '-'} on {run.host or '-'} · Keras on "
          f"{run.backend or 'tensorflow'}   params {run.params or 0:,}")
    print(f"  time      {format_duration(record['duration_s']) or '-'}")
    if epochs:
        print()
        print(text_table({c: [e.get(c) for e in epochs] for c in EPOCH_TABLE},
                         float_format=lambda v: f"{v:.4f}"))
    if run.test_accuracy is not None:
        print(f"\n  test      accuracy {run.test_accuracy:.4f}   loss {run.test_loss:.4f}")


# --- CSV files for spreadsheets -------------------------------------------------------------------
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A CSV cell as a spreadsheet should read it: text starting with `= + - @` (or a tab or
    carriage return) would be run as a formula there (a run named `=HYPERLINK(...)`), so it gets
    a leading apostrophe, the spreadsheets' own mark for "this is text". Numbers are kept."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_text(frame: Any) -> str:
    """`frame.to_csv(index=False)` with every text cell `spreadsheet_safe` (a pandas frame)."""
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype.kind not in "biufcmM":  # text of any dtype (object, str)
            safe[column] = safe[column].map(spreadsheet_safe)
    return safe.to_csv(index=False)
