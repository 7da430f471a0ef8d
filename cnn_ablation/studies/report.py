"""A study as a paper or a lab notebook wants it: a table in Markdown and LaTeX (cell, mean ±
std over seeds, Δ vs the base cell with its 95 % interval, a mark where it stays beyond noise
after Holm's adjustment, seeds), main effects for full factorial designs, a forest plot of the
effects with their intervals (PNG and SVG), and the verdict in plain words.

The plot is drawn with Matplotlib (Agg, no display, no browser): it installs from pip as wheels
and writes PNG and SVG itself. Plotly's static export would need kaleido, whose 1.x releases
drive a Chrome or Chromium that a user's machine may not have. Matplotlib is imported only when
a plot is drawn, so the dashboard does not load it with the page."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pandas as pd

from cnn_ablation.config import METRICS
from cnn_ablation.studies import estimators, words
from cnn_ablation.studies.spec import StudyView
from cnn_ablation.studies.words import REPEATS_NOTE, status_line

HOLM_MARK = "*"


def _num(value: object) -> float:
    return math.nan if value is None or pd.isna(value) else float(value)  # type: ignore[arg-type]


def _holm_mark(verdict_holm: object) -> str:
    return HOLM_MARK if verdict_holm == estimators.BEYOND else ""


def cell_rows(result: dict) -> list[dict[str, str]]:
    """The cell table as text: cell, mean ± std, Δ vs base [95 % CI], Holm mark, seeds."""
    metric = result["metric"]
    rows = []
    for r in result["summary"].to_dict("records"):
        base = bool(r["is_base"])
        rows.append({
            "cell": str(r["cell"]),
            "mean": words.mean_std(_num(r[f"{metric}_mean"]), _num(r[f"{metric}_std"])),
            "delta": "base" if base else words.pp_interval(
                _num(r["delta"]), _num(r["delta_ci_low"]), _num(r["delta_ci_high"])),
            "holm": "" if base else _holm_mark(r["delta_verdict_holm"]),
            "n": str(int(r["n"])),
        })
    return rows


def _difference_rows(frame: pd.DataFrame, label: Any) -> list[dict[str, str]]:
    """A table of differences as text: its label, Δ [95 % CI], Holm mark, seeds, pairing."""
    return [{"effect": label(r), "delta": words.pp_interval(r["effect"], r["ci_low"], r["ci_high"]),
             "holm": _holm_mark(r["verdict_holm"]), "n": str(int(r["n"])),
             "paired": "paired" if r["paired"] else "Welch"} for r in frame.to_dict("records")]


def effect_rows(result: dict) -> list[dict[str, str]]:
    return _difference_rows(result["effects"], effect_label)


def interaction_rows(result: dict) -> list[dict[str, str]]:
    return _difference_rows(result["interactions"],
                            lambda r: f"{r['factor_1']} × {r['factor_2']}")


DIFFERENCE_COLUMNS = ("Δ (95 % CI)", "Holm", "seeds", "interval")


def _difference_cells(rows: list[dict[str, str]]) -> list[list[str]]:
    return [[r["effect"], r["delta"], r["holm"], r["n"], r["paired"]] for r in rows]


def difference_tables(result: dict) -> list[tuple[str, str, str, list[list[str]]]]:
    """The tables of differences a report holds after the cells: (first column, Markdown
    heading, LaTeX caption, rows). Main effects in a factorial design, then its interactions."""
    metric = METRICS[result["metric"]]
    tables = []
    if result["effects_kind"] == "main effects":
        tables.append(("effect", "Main effects (averaged over the other factors within each seed)",
                       f"main effects on {metric}, averaged over the other factors within each "
                       "seed.", _difference_cells(effect_rows(result))))
    if len(result["interactions"]):
        tables.append(("interaction", "Interactions (change in one factor's effect when the "
                       "other moves)", f"interactions on {metric}, the change in one factor's "
                       "effect when the other moves.", _difference_cells(interaction_rows(result))))
    return tables


def effect_label(row: dict) -> str:
    return f"{row['factor']} ({row['change']})" if "factor" in row else str(row["cell"])


def notes(result: dict) -> list[str]:
    metric = METRICS[result["metric"]]
    n = len(words.judged_rows(result))
    primary = "the study's primary metric, fixed when it was created" \
        if result["metric"] == result.get("primary", result["metric"]) else \
        f"exploratory: the primary metric is {METRICS[result['primary']]}"
    out = [f"Metric: {metric} ({primary}); mean ± standard deviation over seeds; cell intervals "
           "cut at 0–100 % where the t interval reaches past it.",
           "Δ: percentage points with the 95 % t interval over seeds, paired by seed "
           "(Welch's interval where seeds do not pair).",
           f"{HOLM_MARK}: beyond noise after Holm's adjustment at 5 % over all {n} verdicts of the "
           "study (one family: effects, interactions, named cells vs the base)."
           if n > 1 else f"{HOLM_MARK}: beyond noise at 5 %.",
           REPEATS_NOTE]
    if result["effects_kind"] == "main effects":
        out.insert(3, "Main effects: the change averaged over the other factors' levels within "
                      "each seed. Interactions: how much one factor's effect changes when the "
                      "other moves (difference of differences per seed). A design cell's Δ vs "
                      "base is a number, not a verdict.")
    if result.get("stein", 0) > 1:
        out.append(f"Adaptive seeds (Stein's two-stage rule): paired intervals use the first "
                   f"round's spread ({result['stein']} seeds), so their 95 % holds exactly.")
    out += words.diverged_words(result["summary"])
    if not result["complete"]:
        out.insert(0, f"PROVISIONAL: {result['done']} of {result['total']} runs; no verdict "
                      "until every cell has all its seeds.")
    return out


# --- Markdown -----------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]], align: str) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join({"l": ":---", "r": "---:", "c": ":---:"}[a] for a in align) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(view: StudyView, result: dict, plot_name: str | None = None) -> str:
    metric = METRICS[result["metric"]]
    parts = [f"# Study {view.id}: {_md_cell(view.name)}", "",
             f"{status_line(result)}; {metric}.", "",
             _md_table(["cell", f"{metric} (mean ± std)", "Δ vs base (95 % CI)", "Holm", "seeds"],
                       [[r["cell"], r["mean"], r["delta"], r["holm"], r["n"]]
                        for r in cell_rows(result)], "lrrcr")]
    for first, heading, _, rows in difference_tables(result):
        parts += ["", f"## {heading}", "", _md_table([first, *DIFFERENCE_COLUMNS], rows, "lrcrl")]
    parts += [""] + [f"- {_md_cell(n).replace(HOLM_MARK, chr(92) + HOLM_MARK)}"
                     for n in notes(result)]
    parts += ["", "## Verdict", "", verdict(result)]
    if plot_name:
        parts += ["", f"![Forest plot of the effects with 95 % intervals]({plot_name})"]
    return "\n".join(parts) + "\n"


# --- LaTeX --------------------------------------------------------------------------------------
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}", "±": r"$\pm$", "→": r"$\to$", "Δ": r"$\Delta$",
          "–": "--", "×": r"$\times$", "…": r"\ldots{}"}


def latex_escape(text: str, numbers: bool = False) -> str:
    """`text` for LaTeX's text mode; `numbers`: a minus sign is typeset as one."""
    out = "".join(_LATEX.get(ch, ch) for ch in text)
    return out.replace("-", "$-$") if numbers else out


def _latex_table(header: list[str], rows: list[list[str]], align: str, caption: str,
                 label: str) -> str:
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v, numbers=i > 0) for i, v in enumerate(row)) + r" \\"
              for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def latex(view: StudyView, result: dict) -> str:
    """Tables for a paper (needs \\usepackage{booktabs}); the notes and verdict as comments."""
    metric = METRICS[result["metric"]]
    parts = [f"% Study {view.id}: {view.name}. {status_line(result)}.",
             "% Needs \\usepackage{booktabs}."]
    parts += [f"% {n}" for n in notes(result)]
    parts.append(_latex_table(
        ["cell", f"{metric} (mean ± std)", "Δ vs base (95 % CI)", "Holm", "seeds"],
        [[r["cell"], r["mean"], r["delta"], r["holm"], r["n"]] for r in cell_rows(result)],
        "lrrcr", f"{view.name}: {metric} per cell, and the difference to the base cell "
                 "with its 95 % interval over seeds.", f"tab:study-{view.id}-cells"))
    for first, _, caption, rows in difference_tables(result):
        parts.append(_latex_table([first, *DIFFERENCE_COLUMNS], rows, "lrcrl",
                                  f"{view.name}: {caption}", f"tab:study-{view.id}-{first}s"))
    parts += ["% Verdict: " + line for line in verdict(result).splitlines()]
    return "\n".join(parts) + "\n"


# --- verdict and plot ---------------------------------------------------------------------------
def verdict(result: dict) -> str:
    """The plain-words verdict without Markdown emphasis (provisional while runs are missing)."""
    return result["words"].replace("**", "")


def forest_plot(view: StudyView, result: dict, fmt: str = "png") -> bytes:
    """The effects as points with their 95 % intervals (percentage points), largest first;
    filled where beyond noise after Holm's adjustment. PNG or SVG bytes."""
    from matplotlib.figure import Figure

    effects = result["effects"]
    labels = [effect_label(r) for r in effects.to_dict("records")]
    n = max(len(labels), 1)
    fig = Figure(figsize=(7.5, 1.2 + 0.45 * n), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    ax.axvline(0, color="#888888", linewidth=1, zorder=1)
    for i, r in enumerate(effects.to_dict("records")):
        y = n - 1 - i
        value, low, high = (100 * _num(r[k]) for k in ("effect", "ci_low", "ci_high"))
        strong = r["verdict_holm"] == estimators.BEYOND
        colour = "#1f4e9c" if strong else "#555555"
        if not math.isnan(low):
            ax.plot([low, high], [y, y], color=colour, linewidth=2, zorder=2)
        if not math.isnan(value):
            ax.plot([value], [y], marker="o", markersize=7, color=colour,
                    markerfacecolor=colour if strong else "white", zorder=3)
        ax.annotate(words.pp_interval(_num(r["effect"]), _num(r["ci_low"]),
                                         _num(r["ci_high"])) + (f" {HOLM_MARK}" if strong else ""),
                    xy=(1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    ax.set_yticks(range(n), list(reversed(labels)) if labels else [""])
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(f"change in {METRICS[result['metric']]} (percentage points, 95 % CI)\n"
                  f"filled: beyond noise after Holm's adjustment ({HOLM_MARK}); open: not",
                  fontsize=9)
    title = f"Study {view.id}: {view.name} ({result['effects_kind']})"
    if not result["complete"]:
        title += f"\nprovisional: {result['done']} of {result['total']} runs"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    with _svg_salt():
        fig.savefig(buffer, format=fmt, metadata=metadata)
    return buffer.getvalue()


class _svg_salt:
    """A fixed salt for SVG ids, so the same study gives the same file."""

    def __enter__(self) -> None:
        import matplotlib

        self.saved = matplotlib.rcParams["svg.hashsalt"]
        matplotlib.rcParams["svg.hashsalt"] = "cnn-ablation"

    def __exit__(self, *exc: object) -> None:
        import matplotlib

        matplotlib.rcParams["svg.hashsalt"] = self.saved


def file_names(study_id: int) -> dict[str, str]:
    stem = f"study-{study_id}"
    return {"markdown": f"{stem}-report.md", "latex": f"{stem}-table.tex",
            "png": f"{stem}-forest.png", "svg": f"{stem}-forest.svg",
            "verdict": f"{stem}-verdict.txt"}


def report_files(view: StudyView, result: dict) -> dict[str, bytes]:
    """Every file of the report by name: Markdown (tables, notes, verdict, the plot linked),
    LaTeX, the forest plot as PNG and SVG, and the verdict as text."""
    names = file_names(view.id)
    return {names["markdown"]: markdown(view, result, names["png"]).encode(),
            names["latex"]: latex(view, result).encode(),
            names["png"]: forest_plot(view, result, "png"),
            names["svg"]: forest_plot(view, result, "svg"),
            names["verdict"]: (verdict(result) + "\n").encode()}


def write_report(out: Path, view: StudyView, result: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in report_files(view, result).items():
        (out / name).write_bytes(data)
        written.append(out / name)
    return written
