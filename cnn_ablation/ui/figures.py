"""Plotly figures as pure functions of frames (testable without a browser or a database).

Curves are built as plain trace dicts and handed to Plotly once, unvalidated (the dicts are
fixed here and checked by tests against Plotly's validation): building 200 traces through
`make_subplots` and `add_trace` took over a second, this takes milliseconds. Each trace is
downsampled server-side to at most POINT_BUDGET points (`downsample`: first, last, and each
bucket's lowest and highest value), so a run of thousands of steps costs the browser what one of
a few hundred does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

PALETTE = qualitative.Plotly + qualitative.D3
SERIES = (("accuracy", "train", "dash"), ("val_accuracy", "validation", "solid"))
LOSS_SERIES = (("loss", "train", "dash"), ("val_loss", "validation", "solid"))
POINT_BUDGET = 500  # points per trace sent to the browser, however long the curve
MARKERS_UP_TO = 100  # longer curves are drawn as lines only


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
    gap = 0.08
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
        "height": height, "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    }


def _line(x: np.ndarray, y: np.ndarray, **props: Any) -> dict[str, Any]:
    x, y = downsample(x, y)
    return {"type": "scatter", "x": x, "y": y,
            "mode": "lines+markers" if len(x) <= MARKERS_UP_TO else "lines", **props}


def curves_figure(epochs: pd.DataFrame, labels: dict[int, str], height: int = 380) -> go.Figure:
    """Accuracy (left) and loss (right) per epoch: one colour per run, train dashed,
    validation solid; the legend names each run by its label."""
    by_run = dict(tuple(epochs.groupby("run_id", sort=False))) if len(epochs) else {}
    traces = []
    for i, (run_id, label) in enumerate(labels.items()):
        colour = PALETTE[i % len(PALETTE)]
        rows = by_run.get(run_id)
        if rows is None:
            continue
        rows = rows.sort_values("epoch")
        x = rows["epoch"].to_numpy()
        for axis, series in (("", SERIES), ("2", LOSS_SERIES)):
            for column, part, dash in series:
                if column not in rows:
                    continue
                y = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
                if np.isnan(y).all():
                    continue
                traces.append(_line(
                    x, y, name=f"{label} · {part}", legendgroup=str(run_id),
                    line={"color": colour, "dash": dash, "width": 2}, marker={"size": 5},
                    showlegend=axis == "", xaxis=f"x{axis}", yaxis=f"y{axis}",
                    hovertemplate=f"{label}<br>{part} {column}: %{{y:.4f}}<br>"
                                  "epoch %{x}<extra></extra>"))
    layout = _two_panels(("Accuracy", "Loss"), height)
    for axis in ("xaxis", "xaxis2"):
        layout[axis].update(title={"text": "epoch"}, **_epoch_ticks(epochs))
    layout["yaxis"].update(title={"text": "accuracy"}, tickformat=".0%")
    layout["yaxis2"].update(title={"text": "cross-entropy"})
    layout["legend"] = {"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0}
    return _figure(traces, layout)


def band_figure(curves: pd.DataFrame, metric: str = "val_accuracy", height: int = 360) -> go.Figure:
    """Per-cell mean line with a ±1 std band over seeds (frame from analysis.cell_curves)."""
    fig = go.Figure()
    for i, (cell, rows) in enumerate(curves.groupby("cell", sort=False)):
        colour = PALETTE[i % len(PALETTE)]
        rows = rows.sort_values("epoch")
        upper = rows["mean"] + rows["std"].fillna(0)
        lower = rows["mean"] - rows["std"].fillna(0)
        fig.add_trace(go.Scatter(x=list(rows["epoch"]) + list(rows["epoch"])[::-1],
                                 y=list(upper) + list(lower)[::-1], fill="toself",
                                 fillcolor=colour, opacity=0.18, line=dict(width=0),
                                 hoverinfo="skip", showlegend=False, legendgroup=cell))
        fig.add_trace(go.Scatter(x=rows["epoch"], y=rows["mean"], mode="lines+markers",
                                 name=f"{cell} (n={int(rows['n'].max())})", legendgroup=cell,
                                 line=dict(color=colour, width=2)))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      yaxis=dict(title=metric.replace("_", " "),
                                 tickformat=".0%" if "accuracy" in metric else None),
                      xaxis=dict(title="epoch", dtick=1 if len(curves) and
                                 curves["epoch"].max() <= 20 else None),
                      legend=dict(orientation="h", y=-0.25))
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
