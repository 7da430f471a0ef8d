"""The browser's chart code: loaded while the page is idle, and never before a page's table.

Tables first. A new browser session (a pasted link, a new tab) that opens Runs or Studies used to
show the table only once Plotly's code had been fetched and compiled as well, because the open
run's curves (the study's curves) came in the same page: 0.7-0.9 s of the browser's main thread
on a loaded 2-core machine, before the table could be drawn. Now such a page draws its charts
once the browser says it has drawn the page's tables: `charts_now()` is False until then, the
page puts a placeholder where its charts go and calls `after_tables()` at its end, whose
invisible component watches the page and, one frame after a table's cells are drawn, tells the
server; the page is drawn again with its charts, Plotly's code is loaded then. Once per browser
session: after that the code is in the browser (this page's charts, or `warm_chart_code`). A
client that is not a browser (AppTest, which runs no JavaScript, and sends no headers) gets the
charts at once, and so does a session whose browser has not answered within WAIT_S (the
component failed to load): the page's live part asks again every second meanwhile.

Idle loading: Streamlit's browser side fetches the code of an element kind the first time one is drawn:
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

import re
import time
from functools import cache
from pathlib import Path

import streamlit as st

TABLES_DRAWN = "browser_drew_tables"  # session state: this browser has drawn a page's tables
WAITING_SINCE = "charts_waiting_since"  # session state: monotonic time charts were first held
WAIT_S = 6.0  # charts come anyway this long after they were first held

CHUNKS = ("PlotlyChart.*.js", "DataFrame.*.js")  # Plotly charts, st.dataframe's grid
# What the pages' tables need: server.py preloads it (the widgets' modules as well measured
# slower: 71 more files queued in front of Streamlit's own first requests)
TABLE_CHUNKS = ("DataFrame.*.js",)

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


JS_DIR = Path(st.__file__).parent / "static" / "static" / "js"
STATIC_IMPORT = re.compile(r'(?:from|import)\s*"\./([\w.\-]+\.js)"')  # not import("...")


@cache
def chunk_names() -> tuple[str, ...]:
    """The file names of Streamlit's Plotly and data-grid modules in this installation (they
    carry a content hash); () where they are not found."""
    return tuple(sorted(p.name for pattern in CHUNKS for p in JS_DIR.glob(pattern)))


@cache
def modules_for(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """The module files matching `patterns` in Streamlit's static/js and every module they
    import statically, transitively (what the browser must fetch before it can run them)."""
    todo = sorted(p.name for pattern in patterns for p in JS_DIR.glob(pattern))
    found: list[str] = []
    while todo:
        name = todo.pop()
        if name in found or not (JS_DIR / name).is_file():
            continue
        found.append(name)
        todo.extend(STATIC_IMPORT.findall((JS_DIR / name).read_text(errors="replace")))
    return tuple(found)


@cache
def _component():  # registered once per process, not on every page run
    return st.components.v2.component("cnn_ablation.warm_chart_code", js=JS)


def warm_chart_code() -> None:
    """Mount the (invisible) component; its JavaScript does the rest in the browser. Not while
    the page holds its charts for its tables (the idle moment it waits for can come while the
    table's own code loads): that page loads the chart code itself, once its table is drawn."""
    if holding_charts():
        return
    names = chunk_names()
    if names:
        _component()(data=list(names), key="warm_chart_code")


WATCH_JS = """
export default function({ setStateValue }) {
  // every table of the page has its canvas, and the cells of one are in (the others may be
  // empty): the page's tables are drawn
  const drawn = () => {
    const tables = [...document.querySelectorAll('[data-testid="stDataFrame"]')];
    return tables.length > 0 && tables.every(table => table.querySelector('canvas'))
      && tables.some(table => table.querySelector('[role="gridcell"]'));
  };
  let told = false;
  // one frame after the cells are in the page, so the table is on screen before chart code loads
  const tell = () => { if (!told) { told = true;
    requestAnimationFrame(() => setTimeout(() => setStateValue('drawn', true), 0)); } };
  if (window.__ablationWarmed || drawn()) { tell(); return; }
  const watcher = new MutationObserver(() => { if (drawn()) { watcher.disconnect(); tell(); } });
  watcher.observe(document.body, { childList: true, subtree: true });
  const timer = window.setTimeout(() => { watcher.disconnect(); tell(); }, 4000);
  return () => { watcher.disconnect(); window.clearTimeout(timer); };
}
"""


@cache
def table_preload_links() -> str:
    """`<link rel="modulepreload">` tags for TABLE_CHUNKS and their imports, leaving out those
    Streamlit's index.html preloads already; "" where Streamlit's files are not found."""
    index = JS_DIR.parent.parent / "index.html"
    if not index.is_file():
        return ""
    present = set(re.findall(r"static/js/([\w.\-]+\.js)", index.read_text()))
    modules = [name for name in modules_for(TABLE_CHUNKS) if name not in present]
    # their stylesheets (Streamlit's loader waits for a module's CSS before it runs it)
    styles = sorted({p.name for name in modules
                     for p in (JS_DIR.parent / "css").glob(f"{name.split('.', 1)[0]}.*.css")})
    return "".join([*(f'<link rel="modulepreload" crossorigin href="./static/js/{name}">'
                      for name in modules),
                    *(f'<link rel="preload" as="style" crossorigin href="./static/css/{name}">'
                      for name in styles)])


def charts_now() -> bool:
    """Whether the page draws its charts in this run: once this browser session has drawn a
    page's tables, for a client without a browser, or WAIT_S after charts were first held."""
    if st.session_state.get(TABLES_DRAWN) or not st.context.headers:
        return True
    since = st.session_state.setdefault(WAITING_SINCE, time.monotonic())
    if time.monotonic() - since > WAIT_S:
        st.session_state[TABLES_DRAWN] = True
        return True
    return False


def holding_charts() -> bool:
    """Whether this session's page is holding its charts until the browser draws its tables."""
    return WAITING_SINCE in st.session_state and not st.session_state.get(TABLES_DRAWN)


def _tables_drawn() -> None:
    st.session_state[TABLES_DRAWN] = True


@cache
def _watcher():
    return st.components.v2.component("cnn_ablation.after_tables", js=WATCH_JS)


def after_tables() -> None:
    """At the end of a page that held its charts (`charts_now()` was False): the component that
    reruns the page once the browser has drawn its tables. Nothing when charts were drawn."""
    if not st.session_state.get(TABLES_DRAWN):
        _watcher()(key="after_tables", on_drawn_change=_tables_drawn)
