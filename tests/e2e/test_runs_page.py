"""End to end, the Runs page in Debian's Chromium: tags filter the table, a click on a row opens
the run, delete asks first (and removes the run's log), a pasted link restores the run and the
filters, the test phase shows as a phase, and at 800 px no button, heading or figure is cut.

One dashboard (no worker) serves the module; each test writes its own runs through storage's
own functions, as a worker would (real SQLite, no mocks). Screenshots go to test-artifacts/e2e/.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse

import pytest

from cnn_ablation.config import RunConfig
from cnn_ablation.jobs.launch import new_run
from cnn_ablation.storage import lifecycle
from cnn_ablation.storage.engine import get_engine
from cnn_ablation.storage.runs import find_run, update_labels
from tests.e2e.conftest import ARTIFACTS, streamlit_server
from tests.support import TEST_WORKER, wait_for

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.e2e
expect = playwright.expect
expect.set_options(timeout=30_000)  # a loaded 2-core machine: wait on conditions, generously


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(url, home, engine) of one dashboard without a worker, shared by this module's tests."""
    home = tmp_path_factory.mktemp("runs-page")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    engine = get_engine(f"sqlite:///{home}/ablation.db")
    with streamlit_server(home, start_worker=False) as url:
        yield url, home, engine


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def make(engine, home, *, seed, status="completed", accuracies=(0.5, 0.6), name="",
         dropout=0.5, tags=(), log=False):
    """A run written through storage as a worker writes it (foreground start, epochs, finish),
    owned by TEST_WORKER with a 60 s heartbeat so nothing reaps it during a test."""
    config = RunConfig(dataset="synthetic", seed=seed, dropout=dropout, epochs=4)
    run_id = lifecycle.start_foreground(engine, new_run(config, name=name), TEST_WORKER,
                                        socket.gethostname(), "cpu:0", heartbeat_interval=60.0)
    if log:
        path = home / "logs" / f"run-{run_id}-e2e00000.log"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"startup run {run_id}\nepoch 1 done\n")
        lifecycle.attach_process(engine, run_id, TEST_WORKER, 4242, log_path=str(path))
    for epoch, acc in enumerate(accuracies, start=1):
        lifecycle.record_epoch(engine, run_id, TEST_WORKER, epoch, {
            "loss": 2 - acc, "accuracy": acc, "val_loss": 2.1 - acc, "val_accuracy": acc - 0.05},
            seconds=1.0)
    if status != "running":
        lifecycle.finish(engine, run_id, status, test_accuracy=accuracies[-1] - 0.06,
                         test_loss=1.0)
    if tags:
        update_labels(engine, run_id, tags=list(tags))
    return run_id


def open_runs(page, url, **params):
    query = urllib.parse.urlencode(params, doseq=True)
    page.goto(f"{url}/runs" + (f"?{query}" if query else ""))
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible(timeout=60_000)


def count_caption(page):
    """The pager's caption under the table: `3 runs, newest first`."""
    return page.get_by_text(", newest first")


def heading_of(page, run_id):
    return page.get_by_role("heading", name=f"Run #{run_id}")


def test_tags_filter_the_table_and_a_row_click_opens_its_run(site, page):
    url, home, engine = site
    tagged = [make(engine, home, seed=s, tags=("tagged-e2e",)) for s in (1, 2)]
    others = [make(engine, home, seed=s) for s in (3, 4)]
    open_runs(page, url)
    grid = page.get_by_test_id("stDataFrame").first
    expect(grid).to_be_visible()
    before = count_caption(page).inner_text()
    page.get_by_test_id("stMultiSelect").filter(has_text="Tags").first.click()
    page.get_by_role("option", name="tagged-e2e").click()
    page.keyboard.press("Escape")
    expect(count_caption(page)).to_have_text("2 runs, newest first")
    assert before != "2 runs, newest first"
    expect(page).to_have_url(re.compile(r"[?&]tag=tagged-e2e"))
    # a click on the second row's name cell opens that run (the newest tagged run is first)
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 200, box["y"] + 35 + 35 + 17)
    expect(heading_of(page, tagged[0])).to_be_visible()
    expect(page).to_have_url(re.compile(rf"[?&]run={tagged[0]}(&|$)"))
    assert others  # untagged runs exist and were filtered out
    page.screenshot(path=str(ARTIFACTS / "runs-tags.png"))


def test_two_checked_rows_get_bulk_actions_and_compare_opens_them(site, page):
    url, home, engine = site
    a = make(engine, home, seed=50, tags=("bulk-e2e",))
    b = make(engine, home, seed=51, tags=("bulk-e2e",))
    open_runs(page, url, tag="bulk-e2e")
    expect(count_caption(page)).to_have_text("2 runs, newest first")
    box = page.get_by_test_id("stDataFrame").first.bounding_box()
    page.mouse.click(box["x"] + 17, box["y"] + 35 + 17)  # the first row's marker (checkbox)
    expect(heading_of(page, b)).to_be_visible()  # one row checked: that run opens
    page.mouse.click(box["x"] + 17, box["y"] + 35 + 35 + 17)  # and the second's
    expect(page.get_by_text("2 runs selected")).to_be_visible()
    expect(heading_of(page, a)).to_be_visible()  # the run checked last is shown
    page.get_by_role("button", name="Compare").click()
    expect(page.get_by_role("heading", name="Compare runs")).to_be_visible()
    expect(page).to_have_url(re.compile(rf"[?&]runs={a}(%2C|,){b}(&|$)"))


def test_delete_asks_first_names_the_run_and_removes_its_log(site, page):
    url, home, engine = site
    doomed = make(engine, home, seed=10, name="doomed e2e", log=True)
    log = str(getattr(find_run(engine, doomed), "log_path", ""))
    assert log.endswith(f"run-{doomed}-e2e00000.log")
    open_runs(page, url, run=doomed)
    expect(heading_of(page, doomed)).to_be_visible()
    page.get_by_role("button", name="Delete…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"run #{doomed}")
    expect(dialog).to_contain_text("doomed e2e")
    expect(dialog).to_contain_text(f"run-{doomed}-e2e00000.log")
    page.screenshot(path=str(ARTIFACTS / "runs-delete-dialog.png"))
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    assert find_run(engine, doomed) is not None and open(log).read()
    page.get_by_role("button", name="Delete…").click()
    page.get_by_role("dialog").get_by_role("button", name=f"Delete run #{doomed}").click()
    expect(page.get_by_text(f"Run #{doomed} deleted")).to_be_visible()  # the toast
    wait_for(lambda: find_run(engine, doomed) is None, 30, "the run to be deleted")
    assert not os.path.exists(log)
    expect(heading_of(page, doomed)).to_have_count(0)
    expect(page.get_by_role("button", name="Delete…")).to_have_count(0)  # nothing selected


def test_a_pasted_link_restores_the_run_and_the_filters(site, page):
    url, home, engine = site
    low = make(engine, home, seed=20, dropout=0.25, tags=("pasted",))
    high = make(engine, home, seed=21, dropout=0.5, tags=("pasted",))
    open_runs(page, url, run=low, tag="pasted", where="dropout <= 0.3")
    expect(heading_of(page, low)).to_be_visible()
    expect(count_caption(page)).to_have_text("1 run, newest first")  # high is filtered out
    expect(page.get_by_test_id("stMultiSelect").filter(has_text="Tags").first).to_contain_text("pasted")
    expect(page.get_by_role("button", name="dropout ≤ 0.3")).to_be_visible()  # removes it
    page.reload()  # a reload shows the same view
    expect(heading_of(page, low)).to_be_visible()
    expect(count_caption(page)).to_have_text("1 run, newest first")
    open_runs(page, url, run=high)  # ?run=N again, in the same tab: it wins again
    expect(heading_of(page, high)).to_be_visible()


def test_the_test_phase_is_shown_as_a_phase(site, page):
    url, home, engine = site
    run_id = make(engine, home, seed=30, status="running", accuracies=(0.4, 0.5, 0.55, 0.6))
    lifecycle.report_progress(engine, run_id, TEST_WORKER, "testing", 4, 4_000, 10_000)
    open_runs(page, url, run=run_id)
    expect(page.get_by_text("testing: 4,000 of 10,000 images")).to_be_visible()
    lifecycle.finish(engine, run_id, "cancelled")


def clipped(page) -> list[str]:
    """Texts of buttons, headings and metric values that are cut (content wider than its box)."""
    return page.evaluate("""() => {
        const selectors = ['[data-testid="stMain"] button', '[data-testid="stMain"] h1',
            '[data-testid="stMain"] h2', '[data-testid="stMain"] h3',
            '[data-testid="stMetricValue"]', '[data-testid="stMetricLabel"]',
            '[data-testid="stMain"] [data-testid="stWidgetLabel"]'];
        const out = [];
        for (const el of document.querySelectorAll(selectors.join(','))) {
            if (!el.offsetParent) continue;  // not shown
            for (const node of [el, ...el.querySelectorAll('p, span, div')]) {
                if (node.scrollWidth > node.clientWidth + 1 && node.innerText.trim()) {
                    out.push(el.innerText.trim().slice(0, 60));
                    break;
                }
            }
        }
        return out;
    }""")


LOADED = """prefix => performance.getEntriesByType('resource')
    .filter(e => e.name.split('/').pop().startsWith(prefix)).map(e => e.name)"""
STREAMLIT_URL = """name => new URL(name, document.querySelector(
    'script[type="module"][src*="/static/js/index."]').src).href"""


def test_chart_code_loads_while_new_run_is_idle_and_closed_parts_load_nothing(site, page):
    """The landing page loads Plotly's code in the background (cnn_ablation/ui/preload.py):
    from the URL Streamlit itself imports it from, so a click to Runs draws the curves without
    fetching it again. A run's closed expanders draw nothing, so the code view's JavaScript is
    fetched only when one is opened."""
    from cnn_ablation.ui.preload import chunk_names

    url, home, engine = site
    run_id = make(engine, home, seed=70, dropout=0.35)
    page.goto(url)
    expect(page.get_by_role("heading", name="New run")).to_be_visible(timeout=60_000)
    page.wait_for_function(f"({LOADED})('PlotlyChart.').length > 0", timeout=60_000)
    assert page.get_by_test_id("stPlotlyChart").count() == 0  # loaded, nothing drawn
    plotly = next(n for n in chunk_names() if n.startswith("PlotlyChart."))
    assert page.evaluate(LOADED, "PlotlyChart.") == [page.evaluate(STREAMLIT_URL, plotly)]
    page.get_by_role("link", name="Runs").click()  # the same tab: what was loaded stays
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    expect(heading_of(page, run_id)).to_be_visible()  # the newest run opens
    expect(page.locator('[data-testid="stPlotlyChart"] .main-svg').first).to_be_visible()
    assert len(page.evaluate(LOADED, "PlotlyChart.")) == 1  # fetched once, by the preload
    assert page.get_by_test_id("stJson").count() == 0
    assert not page.evaluate(LOADED, "StreamlitSyntaxHighlighter.")
    page.get_by_text("Config, device and timing").click()
    expect(page.get_by_test_id("stJson").first).to_contain_text("0.35")
    page.get_by_text("Log and TensorBoard").click()
    expect(page.get_by_test_id("stCode").filter(has_text="tensorboard --logdir")).to_be_visible()
    assert page.evaluate(LOADED, "StreamlitSyntaxHighlighter.")


FIRST_CELLS = """window.__cellsAt = null;
new MutationObserver((_, watcher) => {
  if (document.querySelector('[data-testid="stDataFrame"] [role="gridcell"]')) {
    window.__cellsAt = performance.now(); watcher.disconnect(); }
}).observe(document, {childList: true, subtree: true});"""
STARTED = """prefix => performance.getEntriesByType('resource')
    .filter(e => e.name.split('/').pop().startsWith(prefix) && !e.name.endsWith('.css'))
    .map(e => e.startTime)"""


def test_a_pasted_link_draws_the_table_before_any_chart_code(site, browser):
    """A new browser session (empty cache) on a pasted ?run=N link: the page's HTML has the data
    grid's code fetched before Streamlit has even connected (server.py), the table's cells are
    drawn, and only then is Plotly's code fetched and the run's curves drawn (preload.py)."""
    url, home, engine = site
    run_id = make(engine, home, seed=71, accuracies=(0.41, 0.52, 0.63))
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.add_init_script(FIRST_CELLS)
    page = context.new_page()
    try:
        page.goto(f"{url}/runs?run={run_id}")
        expect(heading_of(page, run_id)).to_be_visible(timeout=60_000)
        expect(page.locator('[data-testid="stPlotlyChart"] .main-svg').first).to_be_visible(
            timeout=60_000)
        cells_at = page.evaluate("() => window.__cellsAt")
        [plotly_at] = page.evaluate(STARTED, "PlotlyChart.")
        [grid_at] = page.evaluate(STARTED, "DataFrame.")
        connect_at = min(page.evaluate(STARTED, "host-config"))
        assert cells_at is not None and plotly_at > cells_at, (cells_at, plotly_at)
        assert grid_at < connect_at, (grid_at, connect_at)
        assert page.get_by_text("come next").count() == 0  # replaced by the run
    finally:
        context.close()


def test_at_800_px_no_button_heading_or_figure_is_cut(site, browser):
    url, home, engine = site
    run_id = make(engine, home, seed=40, name="a run at 800 px", accuracies=(0.61, 0.72, 0.8),
                  tags=("narrow",))
    running = make(engine, home, seed=41, status="running", accuracies=(0.3,))
    context = browser.new_context(viewport={"width": 800, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        for shown in (run_id, running):
            open_runs(page, url, run=shown)
            expect(heading_of(page, shown)).to_be_visible()
            buttons = ["Retry", "Delete…"] if shown == run_id else ["Stop after this epoch",
                                                                    "Stop now…", "Retry"]
            for name in buttons:
                button = page.get_by_role("button", name=name)
                expect(button).to_be_visible()
                assert name in button.inner_text()
            expect(page.get_by_test_id("stMetricValue").first).to_be_visible()
            page.wait_for_timeout(500)  # the layout settles after the chart draws
            assert clipped(page) == [], clipped(page)
            page.screenshot(path=str(ARTIFACTS / f"runs-800px-{shown}.png"))
    finally:
        lifecycle.finish(engine, running, "cancelled")
        context.close()
