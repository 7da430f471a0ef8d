"""End to end: a small study trained by the real worker (`synthetic` data, 1 epoch), then the
Studies page in Debian's Chromium (Playwright), each report file downloaded and read.

The report buttons generate their file on click (Streamlit's deferred download: the browser asks
the server over the websocket, then follows the returned /media/ link). The page gives them
`on_click="ignore"`: with the default, every click reran the study view, which gives each button a
new file id and drops the old ones, so the next click, made before the browser had the new ids,
failed with "Failed to generate file for download" and no download event ever came (seen under
load on this 2-core machine). `download` below fails at once with that message if it shows."""

import re
import struct
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, run_cli, streamlit_server

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.e2e

REPORT_FILES = {  # button -> the file it downloads
    "Report (Markdown)": "study-1-report.md",
    "Table (LaTeX)": "study-1-table.tex",
    "Forest plot (PNG)": "study-1-forest.png",
    "Forest plot (SVG)": "study-1-forest.svg",
}


def download(page, downloads: list, button: str, timeout: float = 180) -> tuple[str, bytes]:
    """Click the download button `button` and wait for its file (generated on the server:
    Matplotlib's first import under load takes a while); fail at once if the button shows an
    error instead."""
    before = len(downloads)
    page.get_by_role("button", name=button).click()
    errors = page.get_by_test_id("stDownloadButtonError")
    deadline = time.monotonic() + timeout
    while len(downloads) == before:
        if errors.count():
            pytest.fail(f"{button}: {errors.all_inner_texts()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{button}: no download within {timeout:g} s")
        page.wait_for_timeout(200)  # lets Playwright deliver the download event
    got = downloads[before]
    return got.suggested_filename, Path(got.path()).read_bytes()


def test_the_studies_page_downloads_the_report_of_a_finished_study(browser, tmp_path):
    created = run_cli(tmp_path, "study", "create", "--dataset", "synthetic:100", "--epochs", "1",
                      "--batch-size", "16", "--factor", "bn_conv_2", "--seeds", "2",
                      "--name", "e2e report")
    assert "queued 4 runs" in created
    run_cli(tmp_path, "worker", "--once", "--gpus", "none")
    assert "complete: 4 of 4 runs" in run_cli(tmp_path, "study", "show", "1")
    # a second, later study that never trains: the page shows the latest unless the link says
    assert "queued 2 runs" in run_cli(tmp_path, "study", "create", "--dataset", "synthetic:100",
                                      "--epochs", "1", "--factor", "dropout=0.2,0.3",
                                      "--seeds", "1", "--name", "queued only")
    run_cli(tmp_path, "study", "report", "1", "--out", str(tmp_path / "cli-report"))
    cli = {name: (tmp_path / "cli-report" / name).read_bytes() for name in REPORT_FILES.values()}

    expect = playwright.expect
    context = browser.new_context(accept_downloads=True, viewport={"width": 1440, "height": 900})
    try:
        with streamlit_server(tmp_path, start_worker=False) as url:
            page = context.new_page()
            downloads: list = []
            page.on("download", lambda d: downloads.append(d))
            page.goto(url)
            page.get_by_role("link", name="Studies").click()
            expect(page.get_by_role("heading", name="Studies")).to_be_visible(timeout=60_000)
            expect(page.get_by_text("provisional: 0 of 2 runs", exact=True)).to_be_visible(timeout=60_000)
            expect(page).to_have_url(re.compile(r"/studies\?study=2$"), timeout=30_000)
            # a pasted link to study 1, then a reload: study 1 both times
            page.goto(f"{url}/studies?study=1")
            expect(page.get_by_text("complete: 4 of 4 runs")).to_be_visible(timeout=60_000)
            page.reload()
            expect(page.get_by_text("complete: 4 of 4 runs")).to_be_visible(timeout=60_000)
            expect(page).to_have_url(re.compile(r"/studies\?study=1$"))
            expect(page.get_by_text("provisional: 0 of 2 runs", exact=True)).to_have_count(0)
            # the last element of the study view: the whole view is on the page
            expect(page.get_by_role("button", name="Cells (CSV)")).to_be_visible(timeout=60_000)
            for button in REPORT_FILES:
                expect(page.get_by_role("button", name=button)).to_be_enabled(timeout=30_000)

            files = {}
            for button, name in REPORT_FILES.items():
                got_name, data = download(page, downloads, button)
                assert got_name == name
                files[name] = data
            # a second round: the buttons still work after a download (nothing reran under them)
            again = download(page, downloads, "Report (Markdown)")
            assert again == ("study-1-report.md", files["study-1-report.md"])
            # all four clicked at once, as an impatient user does: with a rerun per click
            # this gave one file and "Failed to generate file for download" twice
            before = len(downloads)
            for button in REPORT_FILES:
                page.get_by_role("button", name=button).click()
            errors = page.get_by_test_id("stDownloadButtonError")
            deadline = time.monotonic() + 180
            while len(downloads) < before + len(REPORT_FILES):
                assert not errors.count(), errors.all_inner_texts()
                assert time.monotonic() < deadline, [d.suggested_filename for d in downloads]
                page.wait_for_timeout(200)
            assert sorted(d.suggested_filename for d in downloads[before:]) == sorted(
                REPORT_FILES.values())
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "study-report.png"), full_page=True)
    finally:
        context.close()

    markdown = files["study-1-report.md"].decode()
    assert markdown.startswith("# Study 1: e2e report\n")
    assert "complete: 4 of 4 runs" in markdown and "provisional" not in markdown.lower()
    assert "| cell | final val acc (mean ± std) | Δ vs base (95 % CI) | Holm | seeds |" in markdown
    assert "| bn_conv_2=on | " in markdown and "| bn_conv_2=off | " in markdown
    assert "| bn_conv_2 (on → off) | " in markdown
    assert "## Verdict" in markdown and "![Forest plot" in markdown
    latex = files["study-1-table.tex"].decode()
    assert r"\begin{tabular}{lrrcr}" in latex and r"bn\_conv\_2=off" in latex
    assert latex.count(r"\begin{table}") == latex.count(r"\end{table}") == 2
    # the page and `study report` give the same tables (the same per-run values, same code)
    assert files["study-1-report.md"] == cli["study-1-report.md"]
    assert files["study-1-table.tex"] == cli["study-1-table.tex"]

    png = files["study-1-forest.png"]
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 200 and height > 100, (width, height)
    assert png.rstrip(b"\0").endswith(b"IEND\xaeB`\x82")
    svg = files["study-1-forest.svg"].decode()
    assert "<svg" in svg and svg.rstrip().endswith("</svg>")
    assert "bn_conv_2 (on → off)" in svg
