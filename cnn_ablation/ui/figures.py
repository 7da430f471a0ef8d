"""Plotly figures as pure functions of frames (testable without a browser or a database)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

PALETTE = qualitative.Plotly + qualitative.D3
SERIES = (("accuracy", "train", "dash"), ("val_accuracy", "validation", "solid"))
LOSS_SERIES = (("loss", "train", "dash"), ("val_loss", "validation", "solid"))


def curves_figure(epochs: pd.DataFrame, labels: dict[int, str], height: int = 380) -> go.Figure:
    """Accuracy (left) and loss (right) per epoch: one colour per run, train dashed,
    validation solid; the legend names each run by its label."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Accuracy", "Loss"),
                        horizontal_spacing=0.08)
    for i, (run_id, label) in enumerate(labels.items()):
        colour = PALETTE[i % len(PALETTE)]
        rows = epochs[epochs["run_id"] == run_id].sort_values("epoch")
        for col, series in ((1, SERIES), (2, LOSS_SERIES)):
            for column, part, dash in series:
                values = rows[column] if column in rows else pd.Series(dtype=float)
                if values.notna().sum() == 0:
                    continue
                fig.add_trace(go.Scatter(
                    x=rows["epoch"], y=values, mode="lines+markers",
                    name=f"{label} · {part}", legendgroup=str(run_id),
                    line=dict(color=colour, dash=dash, width=2),
                    marker=dict(size=5), showlegend=col == 1,
                    hovertemplate=f"{label}<br>{part} {column}: %{{y:.4f}}<br>"
                                  "epoch %{x}<extra></extra>",
                ), row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1 if _max_epoch(epochs) <= 20 else None)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="cross-entropy", row=1, col=2)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))
    return fig


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
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Gradient norm (fixed batch)",
                                                        "Weight norm"))
    for i, (layer, rows) in enumerate(stats.groupby("layer", sort=False)):
        colour = PALETTE[i % len(PALETTE)]
        for col, column in ((1, "grad_norm"), (2, "weight_norm")):
            fig.add_trace(go.Scatter(x=rows["epoch"], y=rows[column], name=layer,
                                     legendgroup=layer, showlegend=col == 1,
                                     mode="lines+markers", line=dict(color=colour)), row=1, col=col)
    fig.update_yaxes(type="log")
    fig.update_xaxes(title_text="epoch", dtick=1 if _max_epoch(stats) <= 20 else None)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def confusion_figure(report: dict, height: int = 420) -> go.Figure:
    names = report["class_names"]
    fig = go.Figure(go.Heatmap(z=report["confusion"], x=names, y=names, colorscale="Blues",
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images"
                                             "<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis=dict(title="predicted"), yaxis=dict(title="true", autorange="reversed"))
    return fig


def _max_epoch(epochs: pd.DataFrame) -> int:
    return int(epochs["epoch"].max()) if len(epochs) else 0
