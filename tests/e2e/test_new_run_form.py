"""New run in a real browser: a bad folder is a message beside the field (never a traceback), and
the form keeps what was entered when the user visits another page and comes back, reloads the
page, or opens its link elsewhere; the Studies page's form and tab likewise."""

import re

import pytest

from tests.e2e.conftest import ARTIFACTS, run_cli

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.e2e


def open_new_run(page, url):
    page.goto(url)
    playwright.expect(page.get_by_role("heading", name="New run")).to_be_visible(timeout=60_000)


def choose_dataset(page, text: str):
    page.get_by_test_id("stSelectbox").filter(has_text="Dataset").click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def no_traceback(page) -> None:
    html = page.content()
    assert "Traceback" not in html
    assert 'File "' not in html


def test_a_folder_that_does_not_exist_is_a_message_beside_the_field(idle_dashboard, browser):
    url, home = idle_dashboard
    expect = playwright.expect
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    open_new_run(page, url)
    choose_dataset(page, "folder")
    folder = page.get_by_label("Image folder (with train/<class>/ and test/<class>/)", exact=True)
    expect(folder).to_be_visible(timeout=15_000)
    folder.fill(str(home / "folders" / "no-such-folder"))
    folder.press("Enter")
    # The message sits in the same column as the folder field, under it.
    column = page.get_by_test_id("stColumn").filter(has=folder)
    message = column.get_by_test_id("stAlert").filter(has_text="This folder cannot be used")
    expect(message).to_be_visible(timeout=30_000)
    expect(message).to_contain_text("no-such-folder")
    # The summary is still there, and Launch is disabled with the reason beside it.
    expect(page.get_by_test_id("stMetric").filter(has_text="Total parameters")).to_be_visible()
    launch = page.get_by_role("button", name="Launch run")
    expect(launch).to_be_disabled()
    expect(page.get_by_test_id("stAlert").filter(has_text="Cannot launch")).to_contain_text(
        "image folder cannot be used")
    no_traceback(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "new-run-bad-folder.png"), full_page=True)

    # An invalid number: the message is under the training fields, the summary stays.
    choose_dataset(page, "synthetic")
    expect(page.get_by_text("Dataset synthetic: ready")).to_be_visible(timeout=30_000)
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("0")
    epochs.press("Enter")
    expect(page.get_by_test_id("stAlert").filter(has_text="epochs: 0 is not allowed")) \
        .to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("stMetric").filter(has_text="Total parameters")
           .get_by_test_id("stMetricValue")).to_have_text("592,554")
    expect(page.get_by_role("button", name="Launch run")).to_be_disabled()
    no_traceback(page)
    context.close()


def test_the_form_keeps_its_values_across_pages(idle_dashboard, browser):
    url, _ = idle_dashboard
    expect = playwright.expect
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    open_new_run(page, url)
    choose_dataset(page, "synthetic")
    expect(page.get_by_text("Dataset synthetic: ready")).to_be_visible(timeout=30_000)
    slider = page.get_by_role("slider")
    expect(slider).to_have_attribute("aria-valuetext", "0.50", timeout=15_000)
    slider.focus()
    for _ in range(4):  # 0.5 -> 0.3 in steps of 0.05
        page.keyboard.press("ArrowLeft")
    expect(slider).to_have_attribute("aria-valuetext", "0.30", timeout=15_000)
    page.get_by_text("More settings").click()
    limit = page.get_by_label("Training images (0 = all)", exact=True)
    limit.fill("500")  # of synthetic's 1,000: a limit beyond the data is refused
    limit.press("Enter")
    expect(limit).to_have_value("500", timeout=15_000)
    page.wait_for_load_state("networkidle")

    nav = page.get_by_test_id("stTopNav")  # the pages menu
    nav.get_by_role("link", name="Runs").click()
    expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=60_000)
    nav.get_by_role("link", name="New run").click()
    open_new = page.get_by_role("heading", name="New run")
    expect(open_new).to_be_visible(timeout=60_000)

    expect(page.get_by_text("Dataset synthetic: ready")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("slider")).to_have_attribute("aria-valuetext", "0.30", timeout=15_000)
    page.get_by_text("More settings").click()
    expect(page.get_by_label("Training images (0 = all)", exact=True)).to_have_value("500", timeout=15_000)

    # A reload keeps it (the values are in the page's URL), and so does the link pasted into
    # another browser session.
    link = page.url
    assert "dropout=0.3" in link and "limit_train=500" in link and "data=synthetic" in link
    page.reload()
    expect(page.get_by_role("heading", name="New run")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Dataset synthetic: ready")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("slider")).to_have_attribute("aria-valuetext", "0.30", timeout=15_000)
    other = browser.new_context(viewport={"width": 1440, "height": 1000})
    pasted = other.new_page()
    pasted.goto(link)
    expect(pasted.get_by_text("Dataset synthetic: ready")).to_be_visible(timeout=60_000)
    expect(pasted.get_by_role("slider")).to_have_attribute("aria-valuetext", "0.30",
                                                            timeout=15_000)
    pasted.get_by_text("More settings").click()
    expect(pasted.get_by_label("Training images (0 = all)", exact=True)).to_have_value(
        "500", timeout=15_000)
    other.close()
    context.close()


def test_the_studies_page_comes_back_on_the_tab_and_values_left(idle_dashboard, browser):
    url, home = idle_dashboard
    expect = playwright.expect
    run_cli(home, "study", "create", "--study-preset", "chapter", "--dataset", "synthetic",
            "--epochs", "1", "--seeds", "1")
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.goto(url + "/studies")
    results = page.get_by_role("tab", name="Results")
    expect(results).to_have_attribute("aria-selected", "true", timeout=60_000)  # a study exists
    page.get_by_role("tab", name="Start a study").click()
    epochs = page.get_by_label("Epochs per run", exact=True)
    expect(epochs).to_be_visible(timeout=30_000)
    epochs.fill("7")
    epochs.press("Enter")
    expect(epochs).to_have_value("7", timeout=15_000)
    page.wait_for_load_state("networkidle")
    nav = page.get_by_test_id("stTopNav")
    nav.get_by_role("link", name="Runs").click()
    expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=60_000)
    nav.get_by_role("link", name="Studies").click()
    expect(page.get_by_role("heading", name="Studies")).to_be_visible(timeout=60_000)
    expect(page.get_by_role("tab", name="Start a study")).to_have_attribute(
        "aria-selected", "true", timeout=30_000)
    expect(page.get_by_label("Epochs per run", exact=True)).to_have_value("7", timeout=30_000)
    context.close()


def test_new_runs_link_and_the_runs_filters_live_side_by_side(idle_dashboard, browser, make_run):
    """New run's form is in its URL (`?data=...&epochs=...`) and the Runs page's filters in
    its own (`?dataset=...`): going from a filtered Runs page to New run and back keeps both,
    and neither page refuses the other's parameters."""
    from cnn_ablation.config import RunConfig

    url, _ = idle_dashboard
    expect = playwright.expect
    make_run(RunConfig(dataset="synthetic"), accuracies=[0.5])
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.goto(f"{url}/runs?dataset=synthetic")
    expect(page.get_by_text("1 run, newest first")).to_be_visible(timeout=60_000)
    nav = page.get_by_test_id("stTopNav")
    nav.get_by_role("link", name="New run").click()
    open_new = page.get_by_role("heading", name="New run")
    expect(open_new).to_be_visible(timeout=60_000)
    choose_dataset(page, "synthetic")
    expect(page.get_by_text("Dataset synthetic: ready")).to_be_visible(timeout=30_000)
    expect(page).to_have_url(re.compile(r"[?&]data=synthetic"), timeout=30_000)
    nav.get_by_role("link", name="Runs").click()
    expect(page.get_by_text("1 run, newest first")).to_be_visible(timeout=60_000)
    expect(page).to_have_url(re.compile(r"[?&]dataset=synthetic"), timeout=30_000)
    nav.get_by_role("link", name="New run").click()
    expect(page.get_by_text("Dataset synthetic: ready")).to_be_visible(timeout=60_000)
    no_traceback(page)
    assert page.get_by_test_id("stException").count() == 0
    context.close()
