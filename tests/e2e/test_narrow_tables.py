"""The tables at 800 px and 1,400 px in a real browser (issue 25): at 800 px the Runs table
showed columns only up to "best val acc", Compare's results and the Studies page's per-cell
table cut their Δ columns, and even at 1,400 px the last Runs column was cut.

What a data grid draws is on a canvas; its header cells are also in an accessible table that
holds the columns it has drawn (those in view), which is what is read here, with the scroller's
widths: a table that fits has nothing to scroll sideways."""

import pytest

from cnn_ablation.config import RunConfig
from cnn_ablation.studies import grid as study_grid
from cnn_ablation.studies.presets import study_preset
from tests.e2e.conftest import ARTIFACTS

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.e2e

HEADERS = """el => { const s = el.querySelector('.dvn-scroller');
  return {scroll: s.scrollWidth, width: s.clientWidth,
          headers: [...el.querySelectorAll('th[role=columnheader]')].map(h => h.textContent)} }"""


def grids(page, url: str, path: str, heading: str, count: int) -> list[dict]:
    page.goto(url + path)
    playwright.expect(page.get_by_role("heading", name=heading).first).to_be_visible(
        timeout=60_000)
    tables = page.get_by_test_id("stDataFrame")
    playwright.expect(tables).to_have_count(count, timeout=60_000)
    out = []
    for i in range(count):
        playwright.expect(tables.nth(i).locator("th[role=columnheader]").first).to_be_attached(
            timeout=60_000)
        out.append(tables.nth(i).evaluate(HEADERS))
    return out


def test_the_tables_show_what_matters_first_at_800_and_everything_default_at_1400(
        idle_dashboard, browser, engine, make_run):
    url, _ = idle_dashboard
    a = make_run(RunConfig(dataset="synthetic", epochs=2), accuracies=[0.5, 0.6], name="base")
    b = make_run(RunConfig(dataset="synthetic", epochs=2, bn=(1, 0, 0, 0, 1)),
                 accuracies=[0.4, 0.55])
    spec = study_preset("chapter", RunConfig(dataset="synthetic", epochs=1), 2, None)
    study_grid.create(engine, spec, "narrow")
    for i, (_, config) in enumerate(spec.runs()):  # each cell's seeds done, as a worker would
        make_run(config, accuracies=[0.3 + 0.02 * i])
    for width in (800, 1400):
        context = browser.new_context(viewport={"width": width, "height": 1000})
        page = context.new_page()
        (runs,) = grids(page, url, f"/runs?run={a}", "Runs", 1)
        # every default column is in view, nothing to scroll sideways
        assert runs["scroll"] <= runs["width"] + 1, (width, runs)
        assert runs["headers"] == ["run", "name or config", "status", "epoch", "final val acc",
                                   "test acc", "duration"], runs
        _, results = grids(page, url, f"/compare?runs={a},{b}", "Compare runs", 2)
        assert {"run", "final val acc", "Δ final val acc", "test acc", "Δ test acc"} <= set(
            results["headers"]), (width, results)
        _grid, cells, effects = grids(page, url, "/studies", "Studies", 3)
        assert {"cell", "seeds", "final val acc", "Δ vs base (95 % CI)"} <= set(
            cells["headers"]), (width, cells)
        assert {"effect (95 % CI)", "verdict"} <= set(effects["headers"]), (width, effects)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"studies-{width}.png"))
        context.close()
