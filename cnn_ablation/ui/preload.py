"""Load the browser's chart and table code while the page is idle, so the first chart or table of
a session does not wait for it.

Streamlit's browser side fetches the code of an element kind the first time one is drawn:
Plotly's is 4.7 MB, the data grid's 0.5 MB. On a loaded 2-core machine compiling Plotly's takes
the browser's main thread 0.7-0.9 s, so the first visit to Runs (its table, then the open run's
curves) showed the table about 1 s later than every later visit. `warm_chart_code`, called by
app.py after every page (so the browser has all of the page first; a page that stops early
leaves it to the next one), mounts an empty component whose JavaScript imports those modules
once the page is drawn and the browser is idle (a user reading New run), once per browser tab.
They are the very modules Streamlit imports later (the same URL, relative to its main script),
so they are fetched and run once. Where Streamlit's files are not where this looks (another
version), nothing is loaded and nothing breaks.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import streamlit as st

CHUNKS = ("PlotlyChart.*.js", "DataFrame.*.js")  # Plotly charts, st.dataframe's grid

JS = """
export default function({ data }) {
  if (!Array.isArray(data) || !data.length || window.__ablationWarmed) return;
  window.__ablationWarmed = true;
  const main = document.querySelector('script[type="module"][src*="/static/js/index."]');
  if (!main) return;
  const load = () => data.forEach(name => import(new URL(name, main.src).href).catch(() => {}));
  // Only once the page is drawn: no element still waiting for its own code (a skeleton), the
  // script not running. Then at an idle moment, with no deadline: compiling Plotly's code takes
  // the main thread up to a second on a slow machine, which must not land while someone types.
  const busy = '[data-testid="stSkeleton"], [data-testid="stAppSkeleton"], '
    + '[data-testid^="stStatusWidgetRunning"]';
  const idle = window.requestIdleCallback || (f => window.setTimeout(f, 1000));
  const attempt = () => document.querySelector(busy) ? window.setTimeout(() => idle(attempt), 250)
    : load();
  idle(attempt);
}
"""


@cache
def chunk_names() -> tuple[str, ...]:
    """The file names of Streamlit's Plotly and data-grid modules in this installation (they
    carry a content hash); () where they are not found."""
    js = Path(st.__file__).parent / "static" / "static" / "js"
    return tuple(sorted(p.name for pattern in CHUNKS for p in js.glob(pattern)))


@cache
def _component():  # registered once per process, not on every page run
    return st.components.v2.component("cnn_ablation.warm_chart_code", js=JS)


def warm_chart_code() -> None:
    """Mount the (invisible) component; its JavaScript does the rest in the browser."""
    names = chunk_names()
    if names:
        _component()(data=list(names), key="warm_chart_code")
