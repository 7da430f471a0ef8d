"""Every page through streamlit's AppTest: empty and seeded databases, toggles, launch, compare.

The database is a real SQLite file filled through storage's own functions."""

import base64
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cnn_ablation.architecture import count_params
from cnn_ablation.config import RunConfig
from storage import lifecycle
from storage.runs import list_runs
from tests.support import ROOT, TEST_WORKER

PAGES = ["cnn_ablation/ui/new_run.py", "cnn_ablation/ui/runs.py", "cnn_ablation/ui/compare.py",
         "cnn_ablation/ui/studies.py"]


def app(page=None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def values(array) -> list:
    """A trace's x or y as a list: plotly 7 sends arrays as typed base64 (`bdata`)."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_an_empty_database(home, page):
    at = app(page)
    assert at.title[0].value in ("New run", "Runs", "Compare runs", "Studies")
    if page in PAGES[1:3]:
        assert "No runs" in at.info[0].value  # says what to do next
    if page == PAGES[3]:
        assert "No studies yet" in at.info[0].value
    assert any("No worker is running" in w.value for w in at.sidebar.warning)


def test_unreadable_database_says_what_to_do(home):
    (home / "ablation.db").write_bytes(b"not a database at all" * 200)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert "The database cannot be used" in at.error[0].value
    assert "ABLATION_DATABASE_URL" in at.error[0].value


def total_params(at) -> int:
    metric = next(m for m in at.metric if m.label == "Total parameters")
    return int(metric.value.replace(",", ""))


def test_toggling_bn_changes_the_total_exactly_as_keras_does(home):
    at = app()
    at.selectbox(key="dataset").set_value("synthetic").run()
    assert total_params(at) == 592_554
    at.toggle(key="bn_conv_2").set_value(False).run()
    assert total_params(at) == 592_554 - 128
    for name in ("conv_3", "conv_4", "dense_1"):
        at.toggle(key=f"bn_{name}").set_value(False).run()
    assert total_params(at) == 591_402  # the chapter's "BN on conv_1 only"
    at.selectbox(key="dataset").set_value("fashion_mnist").run()
    assert total_params(at) == count_params("seed", (True, False, False, False, False), (28, 28, 1))


def test_launch_queues_runs_with_the_toggled_config(home, engine):
    at = app()
    at.selectbox(key="dataset").set_value("synthetic").run()
    at.toggle(key="bn_conv_3").set_value(False).run()
    at.toggle(key="bn_conv_4").set_value(False).run()
    at.slider(key="dropout").set_value(0.25).run()
    at.number_input(key="epochs").set_value(2).run()
    at.number_input(key="seeds").set_value(2).run()
    at.text_input(key="run_name").set_value("no BN in the middle").run()
    at.button(key="launch").click().run()
    assert not at.exception
    runs = list_runs(engine)
    assert [r.status for r in runs] == ["queued", "queued"]
    assert [r.seed for r in runs] == [0, 1]
    config = runs[0].config
    assert config["bn"] == [1, 1, 0, 0, 1] and config["dropout"] == 0.25 and config["epochs"] == 2
    assert runs[0].name == "no BN in the middle"
    assert "Queued run(s) #1, #2" in at.success[0].value


@pytest.mark.parametrize("widget,value,message", [
    ("lr", 0.0, "learning_rate: 0.0 is not allowed"),
    ("batch_size", 5000, "batch_size: 5000 is not allowed"),
    ("epochs", 0, "epochs: 0 is not allowed"),
    ("val_split", 1.0, "val_split: 1.0 is not allowed"),
])
def test_bad_values_are_refused_in_the_form_and_nothing_is_queued(home, engine, widget, value,
                                                                   message):
    at = app()
    at.selectbox(key="dataset").set_value("synthetic").run()
    at.number_input(key=widget).set_value(value).run()
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    launch = [b for b in at.button if b.key == "launch"]
    assert launch and all(b.disabled for b in launch)  # Launch shown, disabled, reason beside it
    assert list_runs(engine) == []


def test_an_existing_completed_config_is_pointed_out(home, engine, make_run):
    run_id = make_run(RunConfig(dataset="synthetic"), accuracies=[0.5, 0.7])
    at = app()
    at.selectbox(key="dataset").set_value("synthetic").run()
    assert any(f"run #{run_id}" in i.value and "already" in i.value for i in at.info)


def test_runs_page_shows_runs_and_reads_only_new_epochs_on_refresh(home, engine, make_run):
    done = make_run(RunConfig(dataset="synthetic", bn=(1, 0, 0, 0, 1)), accuracies=[0.4, 0.6])
    running = make_run(RunConfig(dataset="synthetic", seed=1), accuracies=[0.3], status="running")
    at = app(PAGES[1])
    table = at.dataframe[0].value
    assert list(table["run"]) == [running, done]  # newest first
    assert list(table["status"]) == ["running", "completed"]
    assert at.session_state["run_choice"] == running
    assert at.session_state["epoch_rows_read"] == 1
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert values(figure["data"][0]["x"]) == [1]
    new_epoch = {"loss": 1.2, "accuracy": 0.5, "val_loss": 1.3, "val_accuracy": 0.45}
    lifecycle.record_epoch(engine, running, TEST_WORKER, 2, new_epoch, seconds=1.0)
    at.run()  # what the 2 s timer does in a browser
    assert at.session_state["epoch_rows_read"] == 1  # only the new epoch was read
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert values(figure["data"][0]["x"]) == [1, 2]


def test_runs_page_shows_a_failed_runs_error_and_filters_by_status(home, engine, make_run):
    make_run(RunConfig(dataset="synthetic"), accuracies=[0.4])
    failed = make_run(RunConfig(dataset="synthetic", seed=2), accuracies=[0.2], status="running")
    lifecycle.finish(engine, failed, "failed", error="ValueError: something broke")
    at = app(PAGES[1])
    assert any("something broke" in e.value for e in at.error)
    at.multiselect(key="filter_status").set_value(["completed"]).run()
    assert list(at.dataframe[0].value["status"]) == ["completed"]


def test_compare_draws_one_trace_per_run_and_series_and_the_config_difference(home, engine, make_run):
    a = make_run(RunConfig(dataset="synthetic"), accuracies=[0.5, 0.7, 0.8])
    b = make_run(RunConfig(dataset="synthetic", bn=(1, 0, 0, 0, 0)), accuracies=[0.4, 0.6, 0.65])
    c = make_run(RunConfig(dataset="synthetic", dropout=0.25), accuracies=[0.3, 0.5, 0.55])
    at = app(PAGES[2])
    at.multiselect(key="compare_ids").set_value([a, b, c]).run()
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [t["name"] for t in figure["data"]]
    assert len(figure["data"]) == 3 * 2 * 2  # runs x (train, validation) x (accuracy, loss)
    assert f"#{b} BN 1·0·0·0·0 · drop 0.5 · validation" in names
    differ = at.dataframe[0].value
    assert list(differ.columns) == ["run", "bn", "dropout"]
    at.selectbox(key="baseline").set_value(a).run()
    results = at.dataframe[1].value
    assert results.loc[0, "Δ test acc"] == 0
    assert results.loc[1, "Δ test acc"] == pytest.approx(100 * (0.59 - 0.74))
    assert at.get("download_button")


@pytest.mark.slow  # a fresh interpreter renders every page
def test_the_web_app_never_imports_tensorflow(home, engine, make_run):
    """Every page rendered in a fresh interpreter, with runs and a study in the database."""
    import subprocess
    import sys

    from cnn_ablation import studies
    from cnn_ablation.study_spec import StudySpec

    make_run(RunConfig(dataset="synthetic"), accuracies=[0.5, 0.6])
    studies.create(engine, StudySpec(RunConfig(dataset="synthetic"), {"dropout": (0.25, 0.5)}),
                   "s")
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(ROOT / "app.py")!r}, default_timeout=60).run()
for page in {PAGES!r}:
    at.switch_page(page).run()
    assert not at.exception, (page, at.exception)
print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_studies_page_starts_a_custom_study_and_refuses_bad_levels(home, engine):
    at = app(PAGES[3])
    at.selectbox(key="study_dataset").set_value("synthetic").run()
    at.number_input(key="study_epochs").set_value(1).run()
    at.number_input(key="study_seeds").set_value(2).run()
    at.text_input(key="study_lr_levels").set_value("0.001, lots").run()
    assert any("learning_rate levels: '0.001, lots' is not allowed" in e.value for e in at.error)
    at.text_input(key="study_lr_levels").set_value("0.0005, 0.001").run()
    at.multiselect(key="study_bn_factors").set_value(["bn_conv_3"]).run()
    assert any("4 cells × 2 seeds = **8 runs**" in m.value for m in at.markdown)
    at.button(key="start_custom").click().run()
    assert not at.exception
    runs = list_runs(engine)
    assert len(runs) == 8 and {r.status for r in runs} == {"queued"}
    assert {r.config["learning_rate"] for r in runs} == {0.0005, 0.001}
    assert {tuple(r.config["bn"]) for r in runs} == {(1, 1, 1, 1, 1), (1, 1, 0, 1, 1)}
