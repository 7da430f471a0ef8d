"""An 800 px wide window: the sidebar starts collapsed, and on New run and Compare no button,
metric value or table header has its text cut (checked by element bounds in the page, not by
eye). Screenshots go to test-artifacts/e2e/."""

import pytest

from tests.e2e.conftest import ARTIFACTS

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.e2e

# Every element whose text must show in full, with the part of it that holds the text: a box
# whose content is wider than the box itself (scrollWidth > clientWidth) cuts its text.
CLIPPED = """() => {
  const roots = [
    'button', 'label', '[data-testid="stMetric"]', '[data-testid="stWidgetLabel"]',
    '[data-testid="stTable"]', 'th', 'td', '[data-testid="stTabs"] [role="tab"]',
  ];
  const cut = el => el.scrollWidth > el.clientWidth + 1;
  const out = [];
  const main = document.querySelector('[data-testid="stMain"]') || document.body;
  for (const root of main.querySelectorAll(roots.join(','))) {
    if (!root.offsetParent) continue;  // not shown
    // the element itself, and inside it whatever hides what overflows it (ellipsis, hidden)
    const inner = [...root.querySelectorAll('*')].filter(
      el => el.offsetParent && getComputedStyle(el).overflowX !== 'visible');
    for (const el of [root, ...inner]) {
      const text = (el.innerText || '').trim();
      if (text && cut(el)) {
        out.push(`${el.tagName}.${el.dataset.testid || ''} "${text.slice(0, 40)}" `
                 + `${el.scrollWidth} > ${el.clientWidth}`);
      }
    }
  }
  return [...new Set(out)];
}"""
SIDEBAR_OPEN = """() => {
  const bar = document.querySelector('[data-testid="stSidebar"]');
  if (!bar) return false;
  const box = bar.getBoundingClientRect();
  return box.right > 1 && box.width > 1;  // on screen and not folded away
}"""


def check_page(page, name: str) -> None:
    page.wait_for_load_state("networkidle")
    assert not page.evaluate(SIDEBAR_OPEN), "the sidebar covers the page at 800 px"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"narrow-{name}.png"), full_page=True)
    clipped = page.evaluate(CLIPPED)
    assert clipped == [], clipped


def test_new_run_and_compare_fit_an_800_px_window(two_runs, browser):
    url, _ = two_runs
    expect = playwright.expect
    context = browser.new_context(viewport={"width": 800, "height": 1000})
    page = context.new_page()
    page.goto(url)
    expect(page.get_by_role("heading", name="New run")).to_be_visible(timeout=60_000)
    page.get_by_test_id("stSelectbox").filter(has_text="Dataset").click()
    page.keyboard.type("synthetic")
    page.keyboard.press("Enter")
    expect(page.get_by_text("Dataset synthetic: ready")).to_be_visible(timeout=30_000)
    page.get_by_label("BatchNorm after conv_3", exact=True).click(force=True)
    expect(page.get_by_test_id("stMetricDelta")).to_be_visible(timeout=30_000)
    table = page.get_by_test_id("stTable")
    expect(table).to_contain_text("dense_1")  # every layer, the largest one included
    assert table.locator("tbody tr").count() == 19  # 20 layers, less bn_conv_3
    check_page(page, "new-run")

    page.goto(f"{url}/compare?runs=1,2")
    expect(page.get_by_role("heading", name="Compare runs")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stPlotlyChart").first).to_contain_text("#2 BN 1·0·0·0·1",
                                                                       timeout=30_000)
    check_page(page, "compare")
    context.close()
