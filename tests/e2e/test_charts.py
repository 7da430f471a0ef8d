"""The curve charts in a real browser, over two runs really trained on synthetic data: smoothing
and log scale change what is drawn, and a pasted Compare link shows the runs it names."""

import re

import pytest

from tests.e2e.conftest import ARTIFACTS

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.e2e

LINES = '[data-testid="stPlotlyChart"] .scatterlayer .trace path.js-line'


def paths(page) -> list[str]:
    return page.locator(LINES).evaluate_all("els => els.map(e => e.getAttribute('d'))")


def wait_for_new_paths(page, before: list[str], timeout_s: float = 60) -> list[str]:
    """The chart's line paths once they differ from `before` (the figure was redrawn)."""
    deadline = timeout_s * 1000
    waited = 0
    while waited < deadline:
        now = paths(page)
        if now and now != before:
            return now
        page.wait_for_timeout(250)
        waited += 250
    raise AssertionError("the chart was not redrawn")


def test_smoothing_log_scale_and_a_pasted_compare_link(two_runs, browser):
    url, _ = two_runs
    expect = playwright.expect
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()

    # A pasted link naming run 1 only (without it the page would show both latest runs).
    page.goto(f"{url}/compare?runs=1")
    expect(page.get_by_role("heading", name="Compare runs")).to_be_visible(timeout=60_000)
    chart = page.get_by_test_id("stPlotlyChart").first
    expect(chart).to_contain_text("#1 BN 1·1·1·1·1 · drop 0.5 · seed 0 · validation", timeout=30_000)
    expect(chart).not_to_contain_text("#2 BN")
    expect(page.locator(LINES)).to_have_count(4)  # (train, validation) x (accuracy, loss)
    page.reload()  # the URL still says runs=1: the same view
    expect(chart).to_contain_text("#1 BN 1·1·1·1·1", timeout=60_000)
    expect(chart).not_to_contain_text("#2 BN")

    # Log scale: the loss panel's axis becomes logarithmic and its curves are redrawn.
    page.wait_for_load_state("networkidle")
    before = paths(page)
    page.get_by_label("Log loss", exact=True).click(force=True)
    expect(chart).to_contain_text("log scale", timeout=30_000)
    after_log = wait_for_new_paths(page, before)
    assert after_log[:2] == before[:2]  # accuracy unchanged
    assert after_log[2:] != before[2:]  # loss redrawn on a log axis

    # Smoothing: each curve gets a faint raw copy behind its smoothed line.
    slider = page.get_by_role("slider", name="Smoothing")
    slider.focus()
    page.keyboard.press("End")  # 0.99
    expect(slider).to_have_attribute("aria-valuetext", "0.99", timeout=15_000)
    expect(page.locator(LINES)).to_have_count(8, timeout=30_000)
    smoothed = paths(page)
    assert smoothed != after_log
    opacities = page.locator('[data-testid="stPlotlyChart"] .scatterlayer .trace').evaluate_all(
        "els => els.map(e => Number(getComputedStyle(e).opacity))")
    assert sorted(opacities)[:4] == [0.25] * 4  # the raw curves, faint
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "charts-smoothed-log.png"), full_page=True)

    # Without a link, Compare shows the latest runs and writes them into the URL.
    page.goto(f"{url}/compare")
    expect(page.get_by_test_id("stPlotlyChart").first).to_contain_text("#2 BN 1·0·0·0·1",
                                                                       timeout=60_000)
    expect(page).to_have_url(re.compile(r"runs=(1(%2C|,)2|2(%2C|,)1)"), timeout=30_000)
    context.close()
