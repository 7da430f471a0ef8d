"""Safe by default on a network, and cancel/delete that say what they do (issue 9).

Pages through streamlit's AppTest on a real SQLite file filled through storage's own functions;
the Makefile, Dockerfile and .streamlit/config.toml read as files (and `make -n` / `sh` where
they are here). AppTest reruns the whole script on each click, so the Runs page keeps its open
dialog in session_state and opens it on every run until it is answered: that is how these tests
confirm inside `st.dialog` (its buttons are in AppTest's tree like any other).
"""

import html
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
import unicodedata

import pytest
import streamlit.config as st_config
from streamlit.testing.v1 import AppTest

from cnn_ablation.config import RunConfig
from cnn_ablation.storage.runs import find_run, list_runs
from cnn_ablation.storage.status import CancelMode, RunStatus
from cnn_ablation.ui.access import beyond_loopback
from cnn_ablation.ui.common import WORD_JOINER, folder_within_roots, masked_url, plain
from tests.support import ROOT

RUNS_PAGE = "cnn_ablation/ui/runs.py"
EVIL = "[click](http://evil.example)"
LINK = re.compile(r"(?<!\\)\]\(")  # `](` that Markdown reads as a link: `]` not escaped
MARKDOWN_KINDS = ("markdown", "title", "subheader", "header", "caption", "info", "success",
                  "warning", "error", "toast")


@pytest.fixture(autouse=True)
def streamlit_options():
    """Full error details while these tests run (the repo's config.toml redacts them, and
    AppTest reads it), and the listening address as config.toml sets it; both restored after."""
    before = {name: st_config.get_option(name)
              for name in ("client.showErrorDetails", "server.address")}
    st_config.set_option("client.showErrorDetails", "full")
    st_config.set_option("server.address", "127.0.0.1")
    yield
    for name, value in before.items():
        st_config.set_option(name, value)


def app(page=None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def rendered_markdown(at: AppTest) -> list[str]:
    """The Markdown source of every element Streamlit renders as Markdown, sidebar included."""
    texts = []
    for kind in MARKDOWN_KINDS:
        texts += [str(e.value) for e in at.get(kind)]
    return texts


def total_params(at) -> int:
    metric = next(m for m in at.metric if m.label == "Total parameters")
    return int(metric.value.replace(",", ""))


# --- user text is shown as typed ---------------------------------------------------------------
def test_a_run_name_with_markdown_renders_as_text_not_a_link(home, engine, make_run):
    make_run(RunConfig(dataset="synthetic"), accuracies=[0.5, 0.6], name=EVIL)
    lost = make_run(RunConfig(dataset="synthetic", seed=1), status="running", accuracies=[0.3])
    from cnn_ablation.storage import lifecycle

    lifecycle.finish(engine, lost, "failed", error=f"ValueError: {EVIL} *broke*")
    at = app(RUNS_PAGE)
    at.selectbox(key="run_select").set_value(1).run()  # the run named EVIL
    assert not at.exception, at.exception
    texts = rendered_markdown(at)
    assert any("click" in t and "evil" in t for t in at.subheader.values)  # the name is shown...
    assert not [t for t in texts if LINK.search(t)], texts  # ...never as a link
    assert EVIL in list(at.dataframe[0].value["name"])  # the table shows it exactly
    at.selectbox(key="run_select").set_value(lost).run()
    assert any("broke" in e.value for e in at.error)
    assert not [t for t in rendered_markdown(at) if LINK.search(t) or "*broke*" in t]


@pytest.mark.parametrize("text", [
    EVIL, "![img](http://x/y.png)", "<http://evil.example>", "http://evil.example", "www.evil.example",
    "*bold* _it_ ~~gone~~ `code`", "# heading", "- item", "1. item", "> quote", "a | b",
    ":red[red] :material/science: :smile:", "$x^2$", "back\\slash [x]", "me@evil.example",
    "&amp; &lt;b&gt;", "learning_rate: 0.0 is not allowed; allowed: 0.0001 ≤ x",
    "foo.http://evil.example", "_https://evil.example_",
])
def test_plain_text_survives_markdown_as_typed(text):
    """The escaped text, rendered by a CommonMark renderer (with GFM strikethrough and tables),
    is exactly the text typed (plus invisible word joiners), with no link, emphasis, code,
    heading or list; and no bare URL or address is left where GFM would link it."""
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark").enable(["strikethrough", "table"])
    rendered = md.render(plain(text))
    assert not re.search(r"<(a|em|strong|code|h\d|li|ol|ul|blockquote|del|img|table)\b", rendered)
    shown = html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()
    assert shown.replace(WORD_JOINER, "") == text
    assert not gfm_would_link(shown)


def gfm_would_link(text: str) -> bool:
    """Whether GFM's literal autolinks (remark-gfm's, as Streamlit renders Markdown) find a link
    in `text` (the text after escapes are undone): `http(s)://` or `www.` at the start or after
    a space, punctuation or symbol; an address whose name touches its `@`."""
    for match in re.finditer(r"(?i)https?://|www\.", text):
        before = text[match.start() - 1] if match.start() else ""
        if not before or before.isspace() or unicodedata.category(before)[0] in "PS":
            return True
    return bool(re.search(r"[-.\w+]@[-\w]+\.", text))


def test_gfm_would_link_finds_what_gfm_links():
    assert gfm_would_link("see http://x.y") and gfm_would_link("(www.x.y)")
    assert gfm_would_link("me@x.y") and not gfm_would_link("xhttp://x.y")


def test_plain_leaves_ordinary_messages_readable():
    assert plain("learning_rate: 0.0 is not allowed") == "learning_rate: 0.0 is not allowed"
    assert plain("Run #3 · BN 1·1·0·0·1 · drop 0.5") == "Run #3 · BN 1·1·0·0·1 · drop 0.5"


def test_the_database_url_is_shown_without_its_password():
    shown = masked_url("postgresql+psycopg://ablation:hunter2@db.example:5432/runs")
    assert "hunter2" not in shown
    assert shown == "postgresql+psycopg://ablation:***@db.example:5432/runs"
    assert masked_url("sqlite:////data/ablation.db") == "sqlite:////data/ablation.db"


def test_a_database_url_with_a_password_is_never_shown_with_it(home, monkeypatch):
    """SQLite has no password: a SQLite URL that carries one is refused, and the refusal shows
    the URL masked (the sidebar's `Database:` line uses the same helper)."""
    monkeypatch.setenv("ABLATION_DATABASE_URL", f"sqlite://user:hunter2@/{home}/other.db")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert any("The database cannot be used" in e.value and "\\*\\*\\*" in e.value
               for e in at.error), [e.value for e in at.error]
    assert "hunter2" not in " ".join(rendered_markdown(at))


def test_the_sidebar_names_the_database(home):
    at = app()
    assert any(str(home.name) in c.value for c in at.sidebar.caption if "Database" in c.value)


# --- who may see the pages ----------------------------------------------------------------------
@pytest.mark.parametrize("address,beyond", [
    (None, True), ("", True), ("0.0.0.0", True), ("::", True), ("192.168.1.20", True),
    ("myhost.example", True), ("127.0.0.1", False), ("127.0.0.2", False), ("localhost", False),
    ("::1", False), ("[::1]", False),
])
def test_which_addresses_are_beyond_loopback(address, beyond):
    assert beyond_loopback(address) is beyond


@pytest.mark.parametrize("address", ["0.0.0.0", None])  # None: unset means every interface
def test_beyond_loopback_without_a_password_no_page_shows(home, engine, make_run, address):
    make_run(RunConfig(dataset="synthetic"), accuracies=[0.5])
    st_config.set_option("server.address", address)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert any("ABLATION_PASSWORD" in e.value for e in at.error)
    assert not at.title and not at.dataframe and not at.button  # no page at all
    at.switch_page(RUNS_PAGE).run()
    assert not at.title and not at.dataframe


def test_beyond_loopback_with_a_password_asks_for_it(home, monkeypatch):
    monkeypatch.setenv("ABLATION_PASSWORD", "correct horse")
    st_config.set_option("server.address", "0.0.0.0")
    at = app()
    assert [t.key for t in at.text_input] == ["access_password"]
    at.text_input(key="access_password").set_value("correct horse")
    at.button(key="access_unlock").click().run()
    assert at.title[0].value == "New run"


def test_with_a_password_every_page_shows_only_the_prompt_until_it_is_given(home, engine,
                                                                           make_run, monkeypatch):
    make_run(RunConfig(dataset="synthetic"), accuracies=[0.5], name="secret project")
    monkeypatch.setenv("ABLATION_PASSWORD", "s3cret")
    at = app()
    for page in (None, RUNS_PAGE, "cnn_ablation/ui/compare.py", "cnn_ablation/ui/studies.py"):
        if page:
            at.switch_page(page).run()
        assert [t.key for t in at.text_input] == ["access_password"]
        assert [b.key for b in at.button] == ["access_unlock"]
        assert not at.dataframe and not at.sidebar.caption
        assert "secret project" not in " ".join(rendered_markdown(at))
    at.text_input(key="access_password").set_value("s3cret ").run()  # close is not enough
    at.button(key="access_unlock").click().run()
    assert not at.exception, at.exception
    assert any("Wrong password" in e.value for e in at.error)
    assert not at.dataframe and [t.key for t in at.text_input] == ["access_password"]
    at.text_input(key="access_password").set_value("s3cret")
    at.button(key="access_unlock").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Studies"  # the page asked for, now shown
    at.switch_page(RUNS_PAGE).run()
    assert at.title[0].value == "Runs" and list(at.dataframe[0].value["name"]) == ["secret project"]
    at.switch_page("cnn_ablation/ui/compare.py").run()  # remembered for the session
    assert at.title[0].value == "Compare runs"
    assert at.session_state["access_granted"] != "s3cret"  # a digest, not the password
    assert "access_password" not in at.session_state  # the typed password is not kept


@pytest.fixture(autouse=True)
def no_failed_attempts_carried_over():
    """Wrong passwords are counted per server process: each test starts with none."""
    from cnn_ablation.ui import access

    access._failures.clear()
    yield
    access._failures.clear()


def test_too_many_wrong_passwords_lock_the_prompt_even_for_the_right_one(home, monkeypatch):
    """Five wrong passwords from one address within five minutes: every further try is refused,
    the right one too, saying how long to wait. Many addresses together hit the overall limit."""
    from cnn_ablation.ui import access

    monkeypatch.setattr(access, "WRONG_PASSWORD_DELAY_S", 0.0)
    monkeypatch.setenv("ABLATION_PASSWORD", "s3cret")
    at = app()
    for i in range(access.MAX_FAILURES_PER_CLIENT):
        at.text_input(key="access_password").set_value(f"guess {i}")
        at.button(key="access_unlock").click().run()
        assert any("Wrong password" in e.value for e in at.error)
    at.text_input(key="access_password").set_value("s3cret")
    at.button(key="access_unlock").click().run()
    assert any("Too many wrong passwords: try again in" in e.value for e in at.error)
    assert [t.key for t in at.text_input] == ["access_password"]  # still locked
    assert access.locked_out("someone else") == 0  # another address may still try
    for i in range(access.MAX_FAILURES_OVERALL):
        access._failed(f"10.0.0.{i}")  # one wrong guess each from many addresses
    assert access.locked_out("someone else") > 0
    assert access.locked_out("someone else", now=time.monotonic() + 301) == 0  # window moved


# --- folder datasets: only under ABLATION_DATA_ROOTS, and never a traceback --------------------
def write_images(folder, classes=("a", "b"), per_class=3, size=(8, 8)):
    from PIL import Image

    for split in ("train", "test"):
        for c, name in enumerate(classes):
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("L", size, color=40 * c + i).save(folder / split / name / f"{i}.png")


def choose_folder(at, path) -> AppTest:
    at.selectbox(key="data").set_value("folder:…").run()
    at.text_input(key="folder_path").set_value(str(path)).run()
    assert not at.exception, at.exception
    return at


def launch_disabled(at) -> bool:
    launch = [b for b in at.button if b.key == "launch"]
    return bool(launch) and all(b.disabled for b in launch)


@pytest.mark.parametrize("where", ["outside", "dotdot", "symlink"])
def test_a_folder_outside_the_data_roots_is_refused_before_it_is_read(home, engine, where):
    outside = home / "elsewhere"
    write_images(outside)
    roots = home / "folders"
    roots.mkdir()
    path = {"outside": outside, "dotdot": roots / ".." / "elsewhere",
            "symlink": roots / "link"}[where]
    if where == "symlink":
        path.symlink_to(outside, target_is_directory=True)
    at = choose_folder(app(), path)
    refusals = [e.value for e in at.error if "ABLATION_DATA_ROOTS" in e.value]
    assert refusals and str(roots) in refusals[0], [e.value for e in at.error]
    assert "train images" not in " ".join(c.value for c in at.caption)  # nothing was scanned
    assert total_params(at) > 0  # the summary stays
    assert launch_disabled(at)
    assert list_runs(engine) == []


@pytest.mark.parametrize("problem", ["missing", "one class", "corrupt image", "a file"])
def test_any_folder_problem_is_an_inline_error_with_the_summary_kept(home, engine, problem):
    folder = home / "folders" / "data"
    if problem == "one class":
        write_images(folder, classes=("only",))
    elif problem == "corrupt image":
        write_images(folder)
        (folder / "train" / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif problem == "a file":
        folder.parent.mkdir(parents=True)
        folder.write_text("not a folder")
    at = app()
    at.selectbox(key="data").set_value("synthetic").run()
    expected = total_params(at)
    at = choose_folder(at, folder)
    assert at.error, "an inline error"
    assert total_params(at) == expected  # the summary of the last dataset that worked stays
    assert launch_disabled(at)
    assert any("Cannot launch" in e.value for e in at.error)
    assert list_runs(engine) == []


def test_a_folder_under_the_roots_works_and_is_stored_resolved(home, engine):
    folder = home / "folders" / "pics"
    write_images(folder, size=(12, 10))
    at = app()
    at.number_input(key="batch_size").set_value(2).run()
    at = choose_folder(at, home / "folders" / "." / "pics")
    assert not at.error, [e.value for e in at.error]
    at.button(key="launch").click().run()
    assert not at.exception, at.exception
    [run] = list_runs(engine)
    assert run.dataset == f"folder:{folder.resolve()}"
    assert run.config["image_size"] == [10, 12]  # (height, width) of 12x10 images


def test_folder_within_roots_as_a_function(tmp_path):
    root = (tmp_path / "root").resolve()
    (root / "a").mkdir(parents=True)
    assert folder_within_roots(str(root / "a"), (root,)) == (root / "a", "")
    assert folder_within_roots(str(root), (root,)) == (root, "")
    folder, why = folder_within_roots(str(tmp_path / "rootless"), (root,))  # a prefix, not under
    assert folder is None and "ABLATION_DATA_ROOTS" in why and str(root) in why
    folder, why = folder_within_roots("a\x00b", (root,))
    assert folder is None and "ABLATION_DATA_ROOTS" in why


# --- cancel keeps what was trained; stop now and delete ask first -------------------------------
def test_stop_after_this_epoch_shows_cancelling_at_once(home, engine, make_run):
    run_id = make_run(RunConfig(dataset="synthetic", epochs=5), "running", accuracies=[0.3, 0.4])
    at = app(RUNS_PAGE)
    assert list(at.dataframe[0].value["status"]) == ["running"]
    at.button(key=f"stop_epoch_{run_id}").click().run()
    assert not at.exception, at.exception
    run = find_run(engine, run_id)
    assert run.status == RunStatus.RUNNING  # still training its epoch
    assert run.cancel_requested and run.cancel_mode == CancelMode.AFTER_EPOCH
    assert list(at.dataframe[0].value["status"]) == ["cancelling…"]
    assert "cancelling…" in at.subheader[0].value
    assert next(m for m in at.metric if m.label == "Status").value == "cancelling…"
    assert any("after the current epoch" in w.value for w in at.warning)
    assert at.button(key=f"stop_epoch_{run_id}").disabled
    assert not at.button(key=f"stop_now_{run_id}").disabled  # may still be made "now"


def test_stop_now_asks_first_and_then_stops_at_once(home, engine, make_run):
    run_id = make_run(RunConfig(dataset="synthetic", epochs=5), "running", accuracies=[0.3])
    at = app(RUNS_PAGE)
    at.button(key=f"stop_now_{run_id}").click().run()
    assert not at.exception, at.exception
    assert not find_run(engine, run_id).cancel_requested  # only asked so far
    dialog = " ".join(m.value for m in at.markdown)
    assert "discarded" in dialog and "stay" in dialog and f"run #{run_id}" in dialog
    at.button(key="dialog_close").click().run()  # "Keep training"
    assert not find_run(engine, run_id).cancel_requested
    assert not [b for b in at.button if b.key == "confirm_stop_now"]  # the dialog is gone
    at.button(key=f"stop_now_{run_id}").click().run()
    at.button(key="confirm_stop_now").click().run()
    assert not at.exception, at.exception
    run = find_run(engine, run_id)
    assert run.cancel_requested and run.cancel_mode == CancelMode.NOW
    assert list(at.dataframe[0].value["status"]) == ["cancelling…"]
    assert any("stop now" in w.value.lower() for w in at.warning)
    assert at.button(key=f"stop_now_{run_id}").disabled
    assert not [b for b in at.button if b.key == "confirm_stop_now"]


def test_a_queued_run_just_gets_cancel(home, engine, make_run):
    run_id = make_run(RunConfig(dataset="synthetic"), "queued")
    at = app(RUNS_PAGE)
    keys = [b.key for b in at.button]
    assert f"cancel_{run_id}" in keys and f"stop_now_{run_id}" not in keys
    at.button(key=f"cancel_{run_id}").click().run()
    assert find_run(engine, run_id).status == RunStatus.CANCELLED


def test_delete_asks_first_and_then_selects_nothing(home, engine, make_run):
    keep = make_run(RunConfig(dataset="synthetic"), accuracies=[0.5], name="keep me")
    doomed = make_run(RunConfig(dataset="synthetic", seed=1), accuracies=[0.4, 0.5],
                      name="doomed *run*")
    at = app(RUNS_PAGE)
    assert at.session_state["run_choice"] == doomed
    at.button(key=f"delete_{doomed}").click().run()
    assert not at.exception, at.exception
    assert find_run(engine, doomed) is not None  # asked, not deleted
    question = " ".join(m.value for m in at.markdown)
    assert f"run #{doomed}" in question and "doomed" in question and "2 of 10 epochs" in question
    assert "*run*" not in question  # the name is escaped there too
    at.button(key="dialog_close").click().run()  # "Keep it"
    assert find_run(engine, doomed) is not None
    at.button(key=f"delete_{doomed}").click().run()
    at.button(key="confirm_delete").click().run()
    assert not at.exception, at.exception
    assert find_run(engine, doomed) is None and find_run(engine, keep) is not None
    assert f"Run #{doomed} deleted" in [t.value for t in at.toast]
    assert at.session_state["run_choice"] is None  # nothing selected ...
    assert not [b for b in at.button if b.key.startswith("delete_")]  # ... no Delete under the cursor
    assert list(at.dataframe[0].value["run"]) == [keep]
    at.run()  # the 2 s refresh keeps it so
    assert at.session_state["run_choice"] is None


# --- how it is started ---------------------------------------------------------------------------
def test_make_run_and_the_docker_image_listen_on_loopback_by_default(monkeypatch):
    from cnn_ablation.cli import DASHBOARD_OPTIONS, dashboard_command, listen_address
    from cnn_ablation.networks.registry import MAX_UPLOAD_BYTES

    monkeypatch.delenv("ABLATION_ADDRESS", raising=False)
    assert listen_address(None) == "127.0.0.1"
    assert listen_address("10.1.2.3") == "10.1.2.3"
    monkeypatch.setenv("ABLATION_ADDRESS", "0.0.0.0")
    assert listen_address(None) == "0.0.0.0" and listen_address("127.0.0.1") == "127.0.0.1"
    command = dashboard_command("127.0.0.1", 8501)
    assert command[1:4] == ["-m", "streamlit", "run"]
    assert command[4].endswith("cnn_ablation/ui/server.py")
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    option = dict(zip(DASHBOARD_OPTIONS[::2], DASHBOARD_OPTIONS[1::2], strict=True))
    assert int(option["--server.maxUploadSize"]) * 2**20 == MAX_UPLOAD_BYTES
    # an installed package has no .streamlit/config.toml beside it: the command carries every
    # value of that file but the address (which the command sets itself)
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    settings = {f"--{section}.{name}": str(value).lower() if isinstance(value, bool) else str(value)
                for section, values in config.items() for name, value in values.items()}
    settings.pop("--server.address")
    assert {k: option.get(k) for k in settings} == settings

    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^ADDRESS :?= .*127\.0\.0\.1", makefile, re.MULTILINE)
    dockerfile = (ROOT / "Dockerfile").read_text()
    code = "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    assert "0.0.0.0" not in code
    cmd = json.loads(re.search(r"^CMD (\[.*\])\s*$", code, re.MULTILINE).group(1))
    assert cmd[:4] == ["python", "-m", "cnn_ablation", "dashboard"] and "--address" not in cmd
    if shutil.which("make"):
        env = {k: v for k, v in os.environ.items() if k != "ABLATION_ADDRESS"}
        out = subprocess.run(["make", "-s", "-n", "run"], cwd=ROOT, capture_output=True, text=True,
                             env=env).stdout
        line = next(x for x in out.splitlines() if "cnn_ablation dashboard" in x)
        assert re.search(r"--address \"?127\.0\.0\.1\"? ", line), line


@pytest.mark.slow
def test_the_served_dashboard_closes_metrics_and_uploads_before_the_password(tmp_path):
    """The real server `make run` starts (cnn_ablation/ui/server.py under uvicorn): Streamlit's
    metrics endpoint answers 404, and an upload for a session that has not given the password
    403, with nothing read; the page and the health check still answer."""
    import urllib.error
    import urllib.request

    from tests.support import start_streamlit

    env = {**os.environ, "ABLATION_START_WORKER": "0", "ABLATION_PASSWORD": "s3cret"}
    server, url = start_streamlit(tmp_path, env)
    try:
        def status(path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str]:
            request = urllib.request.Request(url + path, data=body, method=method)
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    return answer.status, answer.read().decode(errors="replace")
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode(errors="replace")

        assert status("/_stcore/health")[0] == 200
        assert status("/")[0] == 200
        code, text = status("/_stcore/metrics")
        assert code == 404 and "cache" not in text
        assert status("/_stcore/metrics?families=cache_memory_bytes")[0] == 404
        code, text = status("/_stcore/upload_file/some-session/some-file", "PUT", b"x" * 4096)
        assert code == 403 and "password" in text
    finally:
        server.kill()
        server.wait(timeout=30)


def test_streamlit_config_hides_error_details_and_listens_on_loopback():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"
    assert config["server"]["address"] == "127.0.0.1"


def test_streamlit_refuses_an_upload_above_the_products_own_limit_before_any_page_runs():
    """Streamlit checks `server.maxUploadSize` while the request body streams in, before the
    password gate or any page code: it must be the product's limit, not Streamlit's 200 MB."""
    from cnn_ablation.networks.registry import MAX_UPLOAD_BYTES

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 1024 * 1024 == MAX_UPLOAD_BYTES
    st_config.get_config_options(force_reparse=True)  # this folder's file, as `streamlit run`
    assert st_config.get_option("server.maxUploadSize") == MAX_UPLOAD_BYTES // 2**20


def test_a_csv_cell_a_spreadsheet_would_run_as_a_formula_is_kept_as_text(home, engine, make_run):
    """A run named `=HYPERLINK(...)` (or starting with + - @) reaches the Compare CSV with a
    leading apostrophe, the spreadsheets' mark for text; numbers, negative ones too, stay."""
    import io

    import pandas as pd

    from cnn_ablation.storage import listings
    from cnn_ablation.storage.curves import EPOCH_CACHE
    from cnn_ablation.storage.run_filters import RunFilter
    from cnn_ablation.ui.common import epochs_csv

    names = ['=HYPERLINK("http://x","y")', "+1+1", "-cmd", "@SUM(A1)", "plain"]
    ids = [make_run(RunConfig(dataset="synthetic"), accuracies=[0.5], name=n) for n in names]
    rows = listings.run_rows(engine, RunFilter(ids=tuple(ids)))
    epochs, _ = EPOCH_CACHE.read(engine, ids)
    csv = pd.read_csv(io.StringIO(epochs_csv(epochs, rows)))
    shown = dict(zip(csv["run_id"], csv["run_name"], strict=True))
    assert [shown[i] for i in ids] == ["'" + n for n in names[:4]] + ["plain"]
    assert (csv["val_accuracy"] == 0.45).all()  # make_run: val accuracy = accuracy - 0.05


def test_the_log_view_reads_only_files_under_the_logs_folder(home, engine, make_run):
    """The log path comes from the database: one pointing at /proc/self/environ (the
    dashboard's environment, password included) or outside `$ABLATION_HOME/logs` shows nothing."""
    from cnn_ablation.ui.run_view import log_tail

    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "run-1-abc.log").write_text("epoch 1\nepoch 2\n")
    assert log_tail(str(logs / "run-1-abc.log")) == "epoch 1\nepoch 2"
    assert log_tail("/proc/self/environ") is None
    (home / "outside.log").write_text("secret")
    assert log_tail(str(home / "outside.log")) is None
    assert log_tail(str(logs / ".." / "outside.log")) is None
    (logs / "link.log").symlink_to(home / "outside.log")
    assert log_tail(str(logs / "link.log")) is None
