"""End to end: `streamlit run app.py` on 127.0.0.1 driven by Playwright in Debian's Chromium.

The app starts its own worker, which really trains on `synthetic` data. Screenshots are saved
under test-artifacts/e2e/."""

import time

import pytest

from tests.e2e.conftest import ARTIFACTS

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.e2e


def metric(page, label: str):
    return page.get_by_test_id("stMetric").filter(has_text=label).get_by_test_id("stMetricValue")


def points_drawn(page) -> int:
    """Markers of the first trace (train accuracy) in the run's curve chart."""
    traces = page.locator('[data-testid="stPlotlyChart"] .scatterlayer .trace')
    return traces.first.locator(".points path").count() if traces.count() else 0


def new_run(page, url, *, bn_off=(), dropout_steps_left=0, epochs=2):
    expect = playwright.expect
    page.goto(url)
    expect(page.get_by_role("heading", name="New run")).to_be_visible(timeout=30_000)
    page.get_by_test_id("stSelectbox").filter(has_text="Dataset").click()
    page.keyboard.type("synthetic")
    page.keyboard.press("Enter")
    expect(page.get_by_text("Dataset synthetic: ready")).to_be_visible(timeout=15_000)
    for layer in ["conv_1", "conv_2", "conv_3", "conv_4", "dense_1"]:  # one name per switch
        expect(page.get_by_label(f"BatchNorm after {layer}", exact=True)).to_have_count(
            1, timeout=15_000)
    for done, layer in enumerate(bn_off, start=1):
        page.get_by_label(f"BatchNorm after {layer}", exact=True).click(force=True)
        # the layer's chain now shows BatchNorm struck through: ~~BatchNorm~~ -> <del>
        expect(page.locator("del", has_text="BatchNorm")).to_have_count(done, timeout=15_000)
    if dropout_steps_left:
        page.get_by_role("slider").focus()
        for _ in range(dropout_steps_left):
            page.keyboard.press("ArrowLeft")
    epochs_box = page.get_by_label("Epochs")
    epochs_box.fill(str(epochs))
    epochs_box.press("Enter")
    page.wait_for_load_state("networkidle")


def test_toggle_launch_watch_and_compare_in_a_real_browser(dashboard, browser):
    url, home = dashboard
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expect = playwright.expect
    # the session's one Chromium (tests/e2e/conftest.py): Playwright's sync API cannot be
    # started twice in one thread
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()

    # 1. A variant: BN off on conv_3 and conv_4, dropout 0.5 -> 0.3, 8 epochs.
    new_run(page, url, bn_off=("conv_3", "conv_4"), dropout_steps_left=4, epochs=8)
    expect(metric(page, "Total parameters")).to_have_text(f"{592_554 - 256 - 256:,}",
                                                          timeout=15_000)
    page.screenshot(path=str(ARTIFACTS / "1-new-run.png"), full_page=True)
    page.get_by_role("button", name="Launch run").click()
    expect(page.get_by_text("Queued run #1")).to_be_visible(timeout=15_000)

    # 2. Watch it: queued -> running -> completed, the curve gaining points as it runs.
    page.get_by_text("Watch it train on the Runs page").click()
    status = metric(page, "Status")
    expect(status).to_have_text("running", timeout=120_000)
    seen_while_running: set[int] = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = status.inner_text(timeout=10_000)
        if state != "running":
            break
        if points_drawn(page):
            seen_while_running.add(points_drawn(page))
        page.wait_for_timeout(300)
    assert len(seen_while_running) >= 2, f"saw point counts {seen_while_running}"
    expect(status).to_have_text("completed", timeout=120_000)
    expect(metric(page, "Epochs")).to_have_text("8/8", timeout=10_000)
    assert points_drawn(page) == 8
    page.screenshot(path=str(ARTIFACTS / "2-runs.png"), full_page=True)

    # 3. A second variant with every BatchNorm on (the chapter's network), 2 epochs.
    new_run(page, url, epochs=2)
    expect(metric(page, "Total parameters")).to_have_text("592,554", timeout=15_000)
    page.get_by_role("button", name="Launch run").click()
    expect(page.get_by_text("Queued run #2")).to_be_visible(timeout=15_000)
    page.get_by_text("Watch it train on the Runs page").click()
    expect(metric(page, "Status")).to_have_text("completed", timeout=180_000)

    # 4. Compare them: two runs' traces and the config difference.
    page.get_by_role("link", name="Compare").click()
    expect(page.get_by_role("heading", name="Compare runs")).to_be_visible(timeout=30_000)
    chart = page.get_by_test_id("stPlotlyChart").first
    expect(chart).to_contain_text("#1 BN 1·1·0·0·1 · drop 0.3 · seed 0 · validation", timeout=30_000)
    expect(chart).to_contain_text("#2 BN 1·1·1·1·1 · drop 0.5 · seed 0 · validation")
    # 2 runs x (train, validation) x (accuracy, loss) subplots
    assert chart.locator(".scatterlayer .trace").count() == 8
    expect(page.get_by_text("Fields that differ: bn, dropout, epochs")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "3-compare.png"), full_page=True)
    context.close()
