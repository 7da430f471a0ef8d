"""End to end, your own network (issue 14's "Done when"): a small ResNet-style Keras model built
here (two residual blocks, each with a BatchNormalization), saved as a .keras file and uploaded
on the New run page in Chromium; its BatchNorm layers appear as switches with Keras' exact
parameter count (and 4 x channels fewer with one switched off); a two-factor study over the
two BatchNorm layers is started from the Studies page, trained by the dashboard's own worker on
`synthetic` data (1 epoch, 200 images, 1 seed), and the page reports the effects by layer name."""

import re

import pytest

from tests.e2e.conftest import ARTIFACTS

playwright = pytest.importorskip("playwright.sync_api")
keras = pytest.importorskip("keras")
pytestmark = pytest.mark.e2e

CHANNELS = 8  # each block's BatchNorm: gamma, beta, moving mean and variance per channel


def resnet_file(folder):
    """A ResNet-style Functional model for `synthetic` (32x32x3, 10 classes), saved as
    resnet.keras; returns (path, its parameter count as Keras counts it)."""
    L = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(CHANNELS, 3, strides=2, padding="same", name="stem")(inputs)
    for block in (1, 2):
        y = L.Conv2D(CHANNELS, 3, padding="same", name=f"b{block}_conv")(x)
        y = L.BatchNormalization(name=f"b{block}_bn")(y)
        y = L.ReLU(name=f"b{block}_relu")(y)
        x = L.Add(name=f"b{block}_add")([x, y])  # the skip connection around the block
    x = L.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, L.Dense(10, activation="softmax", name="out")(x), name="resnet")
    path = folder / "resnet.keras"
    model.save(path)
    return path, model.count_params()


def metric(page, label: str):
    return page.get_by_test_id("stMetric").filter(has_text=label).get_by_test_id("stMetricValue")


def choose(page, label: str, typed: str) -> None:
    """Pick `typed` in the selectbox labelled `label` (typed into its search, then Enter)."""
    page.get_by_test_id("stSelectbox").filter(has_text=label).click()
    page.keyboard.type(typed)
    page.keyboard.press("Enter")


def fill(page, label: str, value: int) -> None:
    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    playwright.expect(box).to_have_value(str(value), timeout=30_000)


def test_upload_your_network_switch_its_bn_and_study_two_layers_in_a_real_browser(
        dashboard, browser, tmp_path_factory):
    url, home = dashboard
    path, params = resnet_file(tmp_path_factory.mktemp("model"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expect = playwright.expect
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    try:
        # 1. New run: upload the file; its two BatchNorm layers become switches.
        page.goto(url)
        expect(page.get_by_role("heading", name="New run")).to_be_visible(timeout=60_000)
        choose(page, "Dataset", "synthetic")
        expect(page.get_by_text("Dataset synthetic: ready")).to_be_visible(timeout=30_000)
        page.get_by_text("Your own network").click()
        dropzone = page.get_by_test_id("stFileUploaderDropzone")
        expect(dropzone).to_contain_text("50MB", timeout=30_000)  # the product's limit, one
        expect(dropzone).not_to_contain_text("200MB")  # number: not Streamlit's default beside it
        page.locator('input[type="file"]').set_input_files(str(path))  # added at once
        switches = page.get_by_label(re.compile(r"^BatchNorm b\d_bn$"))  # one per layer
        expect(switches).to_have_count(2, timeout=180_000)  # the probe: a process with Keras
        for block in (1, 2):
            expect(page.get_by_text(re.compile(
                rf"b{block}_bn · BatchNormalization, {CHANNELS} channels"))).to_be_visible()
        expect(metric(page, "Total parameters")).to_have_text(f"{params:,}", timeout=60_000)
        page.get_by_label("BatchNorm b2_bn", exact=True).click(force=True)  # b2_bn off
        expect(metric(page, "Total parameters")).to_have_text(f"{params - 4 * CHANNELS:,}",
                                                              timeout=180_000)
        page.screenshot(path=str(ARTIFACTS / "custom-1-new-run.png"), full_page=True)

        # 2. Studies: the network's BatchNorm layers as the two factors, 1 seed, 1 epoch.
        page.get_by_role("link", name="Studies").click()
        expect(page.get_by_role("heading", name="Studies")).to_be_visible(timeout=60_000)
        choose(page, "Dataset", "synthetic")
        choose(page, "Network", "resnet")
        picker = page.get_by_test_id("stMultiSelect").filter(has_text="BatchNorm layers")
        expect(picker).to_be_visible(timeout=180_000)
        fill(page, "Epochs per run", 1)
        fill(page, "Seeds per cell", 1)
        fill(page, "Use only the first N training images (0 = all)", 200)
        for block in (1, 2):
            picker.click()
            page.get_by_role("option", name=f"b{block}_bn ({CHANNELS} channels)").click()
            page.keyboard.press("Escape")
            expect(picker).to_contain_text(f"b{block}_bn", timeout=30_000)
        expect(page.get_by_text(re.compile(r"4 cells × 1 seeds = 4 runs"))).to_be_visible(
            timeout=60_000)
        page.get_by_role("button", name="Start this study").click()
        expect(page.get_by_text("Study #1 started: 4 runs queued.")).to_be_visible(
            timeout=300_000)  # every cell checked by the probe first

        # 3. Results: wait until the worker has trained all four cells, then the effects.
        page.get_by_role("tab", name="Results").click()
        expect(page.get_by_text("complete: 4 of 4 runs")).to_be_visible(timeout=900_000)
        expect(page.get_by_role("heading", name="Effects: main effects")).to_be_visible(
            timeout=60_000)
        # One effect row per layer, named by it. The table is drawn on a canvas; its cells are
        # also in the accessibility table inside it (hidden, so found by CSS, not by role).
        cells = page.locator('[data-testid="stDataFrame"] td[role="gridcell"]')
        for layer in ("bn:b1_bn", "bn:b2_bn"):
            expect(cells.filter(has_text=re.compile(rf"^{layer}$"))).to_have_count(
                1, timeout=60_000)
        expect(cells.filter(has_text=re.compile(r"^on → off$"))).to_have_count(2)
        # with one seed per cell the verdict says it cannot tell, naming both layers
        expect(page.get_by_text(re.compile(r"Too few seeds.*bn:b\d_bn, bn:b\d_bn"))).to_be_visible()
        page.get_by_role("heading", name="Effects: main effects").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "custom-2-study.png"))
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "custom-failed.png"), full_page=True)
        raise
    finally:
        context.close()
