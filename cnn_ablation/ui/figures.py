"""Plotly figures as pure functions of frames (testable without a browser or a database).

Curves are built as plain trace dicts and handed to Plotly once, unvalidated (the dicts are
fixed here and checked by tests against Plotly's validation): building 200 traces through
`make_subplots` and `add_trace` took over a second, this takes milliseconds. Each trace is
downsampled server-side to at most POINT_BUDGET points (`downsample`: first, last, and each
bucket's lowest and highest value), so a run of thousands of steps costs the browser what one of
a few hundred does."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

PALETTE = qualitative.Plotly + qualitative.D3  # 20 distinct colours, fixed order
SERIES = (("accuracy", "train", "dash"), ("val_accuracy", "validation", "solid"))
LOSS_SERIES = (("loss", "train", "dash"), ("val_loss", "validation", "solid"))
POINT_BUDGET = 500  # points per trace sent to the browser, however long the curve
MARKERS_UP_TO = 100  # longer curves are drawn as lines only
X_AXES = {"epoch": "epoch", "step": "step", "time": "training time"}  # the x axis choices
RAW_OPACITY = 0.25  # the raw curve behind a smoothed one


def run_colour(run_id: int) -> str:
    """The colour of run `run_id` on every page and chart: a fixed qualitative palette indexed by
    the id (run #1 is the palette's first colour), so a run keeps its colour whatever else is
    drawn beside it and in whatever order runs were picked."""
    return PALETTE[(int(run_id) - 1) % len(PALETTE)]


def run_label(run_id: int, label: str) -> str:
    """How a run is named in every legend and hover: `#3 BN 1·1·0·0·1 · drop 0.5`."""
    return f"#{int(run_id)} {label}"


@dataclass(frozen=True)
class ChartOptions:
    """What the chart controls above the curves chose (ui.common.chart_controls)."""

    smoothing: float = 0.0  # EMA weight in [0, 0.99]; 0 draws the raw curves only
    log_loss: bool = False  # loss panel on a log scale
    x: str = "epoch"  # a key of X_AXES


def ema(y: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average with weight `weight` (0 = none),
    debiased so the first points are not pulled towards zero. NaN points stay NaN and are
    skipped by the average."""
    y = np.asarray(y, dtype=float)
    if weight <= 0 or len(y) == 0:
        return y
    out = np.full(len(y), np.nan)
    last, n = 0.0, 0
    for i, value in enumerate(y):
        if np.isnan(value):
            continue
        last = last * weight + (1 - weight) * value
        n += 1
        out[i] = last / (1 - weight ** n)
    return out


def minmax_indices(y: np.ndarray, budget: int = POINT_BUDGET) -> np.ndarray:
    """Indices (ascending) of at most `budget` points of `y` that keep its shape: the first and
    the last point, and in each of (budget - 2) // 2 equal buckets between them the lowest and
    the highest value (NaN ignored; a bucket of NaN only keeps nothing). Every point when there
    are no more than `budget`."""
    n = len(y)
    if n <= budget:
        return np.arange(n)
    buckets = max((budget - 2) // 2, 1)
    edges = np.linspace(1, n - 1, buckets + 1).astype(int)
    keep = [0, n - 1]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        part = y[a:b]
        if b <= a or np.isnan(part).all():
            continue
        keep += [a + int(np.nanargmin(part)), a + int(np.nanargmax(part))]
    return np.unique(np.array(keep))


def downsample(x: np.ndarray, y: np.ndarray,
               budget: int = POINT_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) cut to at most `budget` points by `minmax_indices`; unchanged if short enough."""
    if len(y) <= budget:
        return x, y
    keep = minmax_indices(y, budget)
    return x[keep], y[keep]


def _figure(traces: list[dict[str, Any]], layout: dict[str, Any]) -> go.Figure:
    # Unvalidated: the dicts above follow Plotly's schema (tests validate them), and validating
    # every trace again costs ~1 ms each.
    return go.Figure({"data": traces, "layout": layout}, _validate=False)


def _two_panels(titles: tuple[str, str], height: int) -> dict[str, Any]:
    """The layout `make_subplots(rows=1, cols=2, subplot_titles=titles)` makes, as a dict."""
    gap = 0.1  # room for the right panel's tick labels, so they never sit on the left one
    width = (1 - gap) / 2
    return {
        "xaxis": {"domain": [0.0, width], "anchor": "y"},
        "yaxis": {"domain": [0.0, 1.0], "anchor": "x"},
        "xaxis2": {"domain": [width + gap, 1.0], "anchor": "y2"},
        "yaxis2": {"domain": [0.0, 1.0], "anchor": "x2"},
        "annotations": [{"text": title, "x": x, "y": 1.0, "xref": "paper", "yref": "paper",
                         "xanchor": "center", "yanchor": "bottom", "showarrow": False,
                         "font": {"size": 16}}
                        for title, x in zip(titles, (width / 2, 1 - width / 2), strict=True)],
        "height": height, "margin": {"l": 10, "r": 10, "t": 40, "b": 10, "autoexpand": True},
    }


def _line(x: np.ndarray, y: np.ndarray, **props: Any) -> dict[str, Any]:
    x, y = downsample(x, y)
    return {"type": "scatter", "x": x, "y": y,
            "mode": "lines+markers" if len(x) <= MARKERS_UP_TO else "lines", **props}


def _x_values(rows: pd.DataFrame, x: str, steps_per_epoch: float | None) -> np.ndarray | None:
    """Epoch rows' x for the chosen axis; None where this run cannot be drawn on it. Time is the
    run's training time at the end of each epoch (the epochs' durations summed), so a run resumed
    after a worker restart has no gap."""
    epoch = rows["epoch"].to_numpy(dtype=float)
    if x == "step":
        return None if steps_per_epoch is None else epoch * steps_per_epoch
    if x == "time":
        if "seconds" not in rows:
            return None
        return pd.to_numeric(rows["seconds"], errors="coerce").fillna(0).cumsum().to_numpy(
            dtype=float)
    return epoch


def _step_times(run_steps: pd.DataFrame, rows: pd.DataFrame,
                steps_per_epoch: float | None) -> np.ndarray:
    """Sampled steps' training time, on the same clock as the epoch points (epoch durations
    summed): a step's share of its epoch's batches times that epoch's duration, after the
    epochs before it. Steps of the epoch still training use the last finished epoch's pace.
    (Samples are written to the database in batches, so their stored time is not when they
    were taken.) Before any epoch has finished: the database time since the first sample."""
    at = pd.to_numeric(run_steps["recorded_at"], errors="coerce").to_numpy(dtype=float)
    if not steps_per_epoch or "seconds" not in rows or not len(rows):
        return at - at[0]
    seconds = pd.to_numeric(rows.set_index("epoch")["seconds"], errors="coerce").fillna(0)
    seconds = seconds.groupby(level=0).last().sort_index()
    start = seconds.cumsum() - seconds  # training time when each epoch began
    done, pace = float(seconds.sum()), float(seconds.iloc[-1])
    out = np.empty(len(run_steps))
    for i, (epoch, step) in enumerate(zip(run_steps["epoch"], run_steps["step"], strict=True)):
        within = min(max(float(step) - (float(epoch) - 1) * steps_per_epoch, 0.0),
                     steps_per_epoch) / steps_per_epoch
        if epoch in seconds.index:
            out[i] = float(start[epoch]) + float(seconds[epoch]) * within
        else:
            out[i] = done + pace * within
    return out


def _steps_per_epoch(steps: pd.DataFrame | None) -> float | None:
    """Batches per epoch as seen in a run's sampled steps (global step / epoch, largest)."""
    if steps is None or not len(steps):
        return None
    ratio = steps["step"].to_numpy(dtype=float) / steps["epoch"].to_numpy(dtype=float)
    return float(math.ceil(np.nanmax(ratio)))


def curves_figure(epochs: pd.DataFrame, labels: dict[int, str], height: int = 380,
                  options: ChartOptions = ChartOptions(),
                  steps: pd.DataFrame | None = None) -> go.Figure:
    """Accuracy (left) and loss (right): one colour per run (`run_colour`), train dashed,
    validation solid; the legend names each run `#id label` (`run_label`).

    `options`: EMA smoothing (the raw curve faint behind the smoothed one), a log loss axis, and
    the x axis: epoch, step (the sampled training steps of `steps`, run_id/epoch/step/loss/
    accuracy rows, drawn thin where they exist; epochs at epoch × steps per epoch) or wall time
    (training time: the epochs' durations summed). A run that cannot be drawn on the chosen axis (no sampled
    steps) is left out; `missing_runs` says which."""
    by_run = dict(tuple(epochs.groupby("run_id", sort=False))) if len(epochs) else {}
    steps_by_run = dict(tuple(steps.groupby("run_id", sort=False))) \
        if steps is not None and len(steps) else {}
    traces: list[dict[str, Any]] = []
    for run_id, label in labels.items():
        colour = run_colour(run_id)
        name = run_label(run_id, label)
        rows = by_run.get(run_id)
        if rows is None:
            continue
        rows = rows.sort_values("epoch")
        run_steps = steps_by_run.get(run_id)
        run_steps = run_steps.sort_values("step") if run_steps is not None else None
        per_epoch = _steps_per_epoch(run_steps)
        x = _x_values(rows, options.x, per_epoch)
        if x is None:
            continue
        first = True
        if options.x in ("step", "time") and run_steps is not None:
            sx = run_steps["step"].to_numpy(dtype=float) if options.x == "step" else \
                _step_times(run_steps, rows, per_epoch)
            for axis, column in (("", "accuracy"), ("2", "loss")):
                if column not in run_steps:
                    continue
                y = pd.to_numeric(run_steps[column], errors="coerce").to_numpy(dtype=float)
                if np.isnan(y).all():
                    continue
                traces += _series(sx, y, options.smoothing, name=f"{name} · train (steps)",
                                  colour=colour, dash="dot", width=1, group=run_id,
                                  showlegend=first, axis=axis, markers=False)
                first = False
        for axis, series in (("", SERIES), ("2", LOSS_SERIES)):
            for column, part, dash in series:
                if column not in rows:
                    continue
                y = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
                if np.isnan(y).all():
                    continue
                traces += _series(x, y, options.smoothing, name=f"{name} · {part}",
                                  colour=colour, dash=dash, width=2, group=run_id,
                                  showlegend=axis == "", axis=axis, markers=True)
    loss_title = "Loss (cross-entropy" + (", log scale)" if options.log_loss else ")")
    layout = _two_panels(("Accuracy", loss_title), height)
    x_title = {"epoch": "epoch", "step": "step (batches)", "time": "training time (s)"}[options.x]
    for axis in ("xaxis", "xaxis2"):
        layout[axis].update(title={"text": x_title},
                            **(_epoch_ticks(epochs) if options.x == "epoch" else {}))
    # No y axis titles: the panel titles name them, and a title left of the loss axis would sit
    # on the accuracy panel on a narrow screen.
    layout["yaxis"].update(tickformat=_pct_format(epochs, ("accuracy", "val_accuracy")))
    if options.log_loss:
        layout["yaxis2"]["type"] = "log"
    layout["legend"] = {"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0}
    layout["hovermode"] = "x unified"
    return _figure(traces, layout)


def missing_runs(epochs: pd.DataFrame, labels: dict[int, str], options: ChartOptions,
                 steps: pd.DataFrame | None = None) -> list[int]:
    """Runs with epochs that `curves_figure` leaves out on this x axis (no sampled steps)."""
    if options.x != "step" or not len(epochs):
        return []
    with_steps = set(steps["run_id"]) if steps is not None and len(steps) else set()
    have = set(epochs["run_id"])
    return [r for r in labels if r in have and r not in with_steps]


def _series(x: np.ndarray, y: np.ndarray, smoothing: float, *, name: str, colour: str, dash: str,
            width: int, group: int, showlegend: bool, axis: str,
            markers: bool) -> list[dict[str, Any]]:
    """One curve: raw, or (with smoothing) the raw curve faint behind its EMA."""
    common = {"legendgroup": str(group), "xaxis": f"x{axis}", "yaxis": f"y{axis}"}
    line = {"color": colour, "dash": dash, "width": width}
    hover = f"{name}: %{{y:.4f}}<extra></extra>"
    if smoothing <= 0:
        trace = _line(x, y, name=name, line=line, marker={"size": 6}, showlegend=showlegend,
                      hovertemplate=hover, **common)
        if not markers:
            trace["mode"] = "lines"
        return [trace]
    raw = _line(x, y, name=f"{name} (raw)", line={**line, "width": 1}, opacity=RAW_OPACITY,
                marker={"size": 4}, showlegend=False, hoverinfo="skip", **common)
    smooth = _line(x, ema(y, smoothing), name=name, line=line, marker={"size": 6},
                   showlegend=showlegend, hovertemplate=hover, **common)
    if not markers:
        raw["mode"] = smooth["mode"] = "lines"
    return [raw, smooth]


def _pct_format(frame: pd.DataFrame, columns: tuple[str, ...]) -> str:
    """A percent tick format with enough decimals that ticks over the data's span never repeat
    (87 %, 87 %, 88 % becomes 87.2 %, 87.4 %, ...)."""
    values = [pd.to_numeric(frame[c], errors="coerce") for c in columns if c in frame]
    if not values:
        return ".0%"
    both = pd.concat(values).dropna()
    if len(both) < 2:
        return ".0%"
    span_pct = 100 * float(both.max() - both.min())
    if span_pct <= 0:
        return ".1%"
    step = span_pct / 6  # Plotly draws about six ticks
    decimals = max(0, min(3, math.ceil(-math.log10(step)))) if step < 1 else 0
    return f".{decimals}%"


def band_figure(curves: pd.DataFrame, metric: str = "val_accuracy", height: int = 360) -> go.Figure:
    """Per-cell mean line with a ±1 std band over seeds (frame from estimators.cell_curves). A cell
    with one epoch is a marker with ±1 std error bars (a band over one x would not show)."""
    fig = go.Figure()
    for i, (cell, rows) in enumerate(curves.groupby("cell", sort=False)):
        colour = PALETTE[i % len(PALETTE)]
        rows = rows.sort_values("epoch")
        std = rows["std"].fillna(0)
        name = f"{cell} (n={int(rows['n'].max())})"
        if len(rows) == 1:
            fig.add_trace(go.Scatter(x=rows["epoch"], y=rows["mean"], mode="markers", name=name,
                                     legendgroup=cell, marker=dict(color=colour, size=12),
                                     error_y=dict(type="data", array=list(std), visible=True,
                                                  color=colour, thickness=2, width=8)))
            continue
        upper = rows["mean"] + std
        lower = rows["mean"] - std
        fig.add_trace(go.Scatter(x=list(rows["epoch"]) + list(rows["epoch"])[::-1],
                                 y=list(upper) + list(lower)[::-1], fill="toself",
                                 fillcolor=colour, opacity=0.18, line=dict(width=0),
                                 hoverinfo="skip", showlegend=False, legendgroup=cell))
        fig.add_trace(go.Scatter(x=rows["epoch"], y=rows["mean"], mode="lines+markers",
                                 name=name, legendgroup=cell, marker=dict(size=7),
                                 line=dict(color=colour, width=2)))
    accuracy = "accuracy" in metric
    spread = curves.assign(upper=curves["mean"] + curves["std"].fillna(0),
                           lower=curves["mean"] - curves["std"].fillna(0)) if len(curves) \
        else curves
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      yaxis=dict(title=metric.replace("_", " "),
                                 tickformat=_pct_format(spread, ("upper", "lower", "mean"))
                                 if accuracy else None),
                      xaxis=dict(title="epoch", dtick=1 if len(curves) and
                                 curves["epoch"].max() <= 20 else None),
                      hovermode="x unified", legend=dict(orientation="h", y=-0.25))
    return fig


def layer_norms_figure(stats: pd.DataFrame, height: int = 340) -> go.Figure:
    """Per-layer gradient norm (left) and weight norm (right) at the end of each epoch."""
    traces = []
    for i, (layer, rows) in enumerate(stats.groupby("layer", sort=False)):
        colour = PALETTE[i % len(PALETTE)]
        x = rows["epoch"].to_numpy()
        for axis, column in (("", "grad_norm"), ("2", "weight_norm")):
            y = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
            traces.append(_line(x, y, name=layer, legendgroup=layer, showlegend=axis == "",
                                line={"color": colour}, xaxis=f"x{axis}", yaxis=f"y{axis}"))
    layout = _two_panels(("Gradient norm (fixed batch)", "Weight norm"), height)
    for axis in ("xaxis", "xaxis2"):
        layout[axis].update(title={"text": "epoch"}, **_epoch_ticks(stats))
    for axis in ("yaxis", "yaxis2"):
        layout[axis]["type"] = "log"
    return _figure(traces, layout)


def confusion_figure(report: dict, height: int = 420) -> go.Figure:
    names = report["class_names"]
    fig = go.Figure(go.Heatmap(z=report["confusion"], x=names, y=names, colorscale="Blues",
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images"
                                             "<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis=dict(title="predicted"), yaxis=dict(title="true", autorange="reversed"))
    return fig


def _epoch_ticks(frame: pd.DataFrame) -> dict[str, Any]:
    """A tick at every epoch for up to 20 epochs; Plotly's own choice beyond."""
    return {"dtick": 1} if _max_epoch(frame) <= 20 else {}


def _max_epoch(epochs: pd.DataFrame) -> int:
    return int(epochs["epoch"].max()) if len(epochs) else 0
