"""Every page through streamlit's AppTest: empty and seeded databases, toggles, launch, compare.

The database is a real SQLite file filled through storage's own functions."""

import base64
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cnn_ablation.architecture import count_params
from cnn_ablation.config import RunConfig
from cnn_ablation.storage import lifecycle
from cnn_ablation.storage.runs import list_runs
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
    if page == PAGES[3]:  # the form first; Results (drawn once opened) says there is none
        assert at.selectbox(key="study_dataset").value and not at.info
        at.session_state["studies_tab"] = "Results"
        at.run()
        assert "No studies yet" in at.info[0].value
        assert "study_dataset" not in [s.key for s in at.selectbox]
    assert any("No worker is running" in w.value for w in at.warning)


@pytest.mark.parametrize("page", PAGES)
def test_the_packaged_dashboard_script_finds_every_page_and_link(home, engine, page):
    """cnn_ablation/ui/dashboard.py (what `cnn-ablation dashboard` and `make run` serve) has
    cnn_ablation/ui as its main folder: every page, its links to other pages (st.page_link
    resolves a relative path from there) and a launch's link to the run work from it too."""
    at = AppTest.from_file(str(ROOT / "cnn_ablation" / "ui" / "dashboard.py"), default_timeout=60)
    at.run()
    at.switch_page(str(ROOT / page)).run()
    assert not at.exception, at.exception
    assert at.title[0].value in ("New run", "Runs", "Compare runs", "Studies")
    if page == PAGES[0]:
        at.selectbox(key="data").set_value("synthetic").run()
        at.button(key="launch").click().run()
        assert not at.exception, at.exception
        assert [r.status for r in list_runs(engine)] == ["queued"]


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
    at.selectbox(key="data").set_value("synthetic").run()
    assert total_params(at) == 592_554
    at.toggle(key="bn_conv_2").set_value(False).run()
    assert total_params(at) == 592_554 - 128
    for name in ("conv_3", "conv_4", "dense_1"):
        at.toggle(key=f"bn_{name}").set_value(False).run()
    assert total_params(at) == 591_402  # the chapter's "BN on conv_1 only"
    at.selectbox(key="data").set_value("fashion_mnist").run()
    assert total_params(at) == count_params("seed", (True, False, False, False, False), (28, 28, 1))


def test_launch_queues_runs_with_the_toggled_config(home, engine):
    at = app()
    at.selectbox(key="data").set_value("synthetic").run()
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
    assert "Queued runs #1, #2" in at.success[0].value


@pytest.mark.parametrize("widget,value,message", [
    ("lr", 0.0, "learning_rate: 0.0 is not allowed"),
    ("batch_size", 5000, "batch_size: 5000 is not allowed"),
    ("epochs", 0, "epochs: 0 is not allowed"),
    ("val_split", 1.0, "val_split: 1.0 is not allowed"),
])
def test_bad_values_are_refused_in_the_form_and_nothing_is_queued(home, engine, widget, value,
                                                                   message):
    at = app()
    at.selectbox(key="data").set_value("synthetic").run()
    at.number_input(key=widget).set_value(value).run()
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    launch = [b for b in at.button if b.key == "launch"]
    assert launch and all(b.disabled for b in launch)  # Launch shown, disabled, reason beside it
    assert list_runs(engine) == []


def test_an_existing_completed_config_is_pointed_out(home, engine, make_run):
    run_id = make_run(RunConfig(dataset="synthetic"), accuracies=[0.5, 0.7])
    at = app()
    at.selectbox(key="data").set_value("synthetic").run()
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
    assert f"#{b} BN 1·0·0·0·0 · drop 0.5 · seed 0 · validation" in names
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

    from cnn_ablation.studies import grid as study_grid
    from cnn_ablation.studies.spec import StudySpec

    make_run(RunConfig(dataset="synthetic"), accuracies=[0.5, 0.6])
    study_grid.create(engine, StudySpec(RunConfig(dataset="synthetic"), {"dropout": (0.25, 0.5)}),
                   "s")
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(ROOT / "app.py")!r}, default_timeout=60).run()
for key in ("run_log_open", "run_config_open", "run_diagnostics_open"):
    at.session_state[key] = True  # the run's expanders open: all they draw is drawn too
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


def test_the_studies_form_keeps_its_values_across_a_visit_to_another_page(home, engine):
    at = app(PAGES[3])
    at.selectbox(key="study_dataset").set_value("synthetic").run()
    at.number_input(key="study_epochs").set_value(3).run()
    at.text_input(key="study_name").set_value("my BN study").run()
    at.multiselect(key="study_bn_factors").set_value(["bn_conv_2"]).run()
    at.text_input(key="study_dropout_levels").set_value("0, 0.5").run()
    at.switch_page(PAGES[0]).run()
    at.switch_page(PAGES[3]).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="study_dataset").value == "synthetic"
    assert at.number_input(key="study_epochs").value == 3
    assert at.text_input(key="study_name").value == "my BN study"
    assert at.multiselect(key="study_bn_factors").value == ["bn_conv_2"]
    assert at.text_input(key="study_dropout_levels").value == "0, 0.5"


def test_a_one_click_study_asks_first_with_its_runs_and_time(home, engine):
    """One click used to queue hours of training at once; now it asks, saying how many runs."""
    from cnn_ablation.storage.studies import list_studies

    at = app(PAGES[3])
    at.selectbox(key="study_dataset").set_value("synthetic").run()
    at.button(key="preset_chapter").click().run()
    assert not at.exception, at.exception
    assert list_runs(engine) == [] and list_studies(engine) == []  # asked, nothing queued
    asked = " ".join(m.value for m in at.markdown)
    assert "2 cells × 3 seeds = **6 runs**" in asked
    at.button(key="preset_cancel").click().run()
    assert list_runs(engine) == [] and "preset_confirm" not in [b.key for b in at.button]
    at.button(key="preset_chapter").click().run()
    at.button(key="preset_confirm").click().run()
    assert not at.exception, at.exception
    assert len(list_runs(engine)) == 6 and len(list_studies(engine)) == 1
    assert any("Study #1 started: 6 runs queued" in m.value for m in at.success)
    at.run()  # asked once: a later rerun queues nothing more
    assert len(list_runs(engine)) == 6 and "preset_confirm" not in [b.key for b in at.button]


# --- the Runs page as a product: filters in the URL, labels, bulk delete, BatchNorm's hint -------
def url_values(at, key) -> list[str]:
    """A URL parameter as the list of its values (AppTest keeps a single value as a string)."""
    value = at.query_params.get(key)
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _finished(engine, make_run, config, pairs, **columns):
    """A completed run whose epochs have these (training, validation) accuracies."""
    run_id = make_run(config, "running", **columns)
    for epoch, (train, val) in enumerate(pairs, start=1):
        lifecycle.record_epoch(engine, run_id, TEST_WORKER, epoch, {
            "loss": 2 - train, "accuracy": train, "val_loss": 2.2 - val, "val_accuracy": val},
            seconds=1.0)
    lifecycle.finish(engine, run_id, "completed", test_accuracy=pairs[-1][1], test_loss=1.0)
    return run_id


def test_runs_filters_by_tag_config_field_and_metric_and_keeps_them_in_the_url(home, engine,
                                                                                make_run):
    from cnn_ablation.storage.runs import update_labels

    low = make_run(RunConfig(dataset="synthetic", dropout=0.25), accuracies=[0.3, 0.4])
    high = make_run(RunConfig(dataset="synthetic", dropout=0.5, seed=1), accuracies=[0.6, 0.8])
    other = make_run(RunConfig(dataset="synthetic", bn=(1, 1, 0, 1, 1), seed=2),
                     accuracies=[0.5])
    update_labels(engine, low, tags=["sweep"])
    update_labels(engine, high, tags=["sweep", "best"])
    at = app(PAGES[1])
    assert list(at.dataframe[0].value["run"]) == [other, high, low]
    assert list(list(at.dataframe[0].value["tags"])[1]) == ["best", "sweep"]  # the tags column
    at.multiselect(key="filter_tags").set_value(["sweep"]).run()
    assert list(at.dataframe[0].value["run"]) == [high, low]
    assert url_values(at, "tag") == ["sweep"]
    assert "where_field" not in [s.key for s in at.selectbox]  # closed: drawn once opened
    at.session_state["runs_more_filters_open"] = True  # the user opens the expander
    at.run()
    at.selectbox(key="where_field").set_value("dropout").run()
    at.selectbox(key="where_op").set_value(">=").run()
    at.text_input(key="where_value").set_value("0.3").run()
    at.button(key="where_add").click().run()
    assert list(at.dataframe[0].value["run"]) == [high]
    assert url_values(at, "where") == ["dropout >= 0.3"]
    at.button(key="where_remove_0").click().run()  # the condition's ✕
    assert list(at.dataframe[0].value["run"]) == [high, low]
    at.text_input(key="where_value").set_value("lots").run()
    at.selectbox(key="where_op").set_value("<").run()
    at.button(key="where_add").click().run()
    assert any("value: 'lots' is not allowed with \\<; allowed: a number" in e.value
               for e in at.error)
    assert list(at.dataframe[0].value["run"]) == [high, low]  # nothing was added
    at.slider(key="filter_best").set_value((50.0, 100.0)).run()  # best val acc 75 % vs 35 %
    assert list(at.dataframe[0].value["run"]) == [high]
    assert url_values(at, "best") == ["50-100"]
    at.session_state["runs_more_filters_open"] = False  # closed again: the range still holds
    at.run()
    assert "filter_best" not in [s.key for s in at.slider]
    assert list(at.dataframe[0].value["run"]) == [high]
    at.session_state["runs_more_filters_open"] = True
    at.run()
    assert at.slider(key="filter_best").value == (50.0, 100.0)



def test_a_pasted_link_restores_the_run_and_filters_on_every_load(home, engine, make_run):
    a = make_run(RunConfig(dataset="synthetic"), accuracies=[0.5])
    b = make_run(RunConfig(dataset="synthetic", bn=(1, 1, 0, 1, 1), seed=1), accuracies=[0.6])
    c = make_run(RunConfig(dataset="synthetic", seed=2), accuracies=[0.4])
    at = AppTest.from_file(str(ROOT / "cnn_ablation/ui/runs.py"), default_timeout=60)
    at.query_params.update({"run": str(b), "where": "bn_off contains conv_3",
                            "status": "completed"})
    at.run()
    assert not at.exception, at.exception
    assert list(at.dataframe[0].value["run"]) == [b]
    assert at.session_state["run_choice"] == b
    assert at.multiselect(key="filter_status").value == ["completed"]
    at.query_params.clear()
    at.query_params["run"] = str(a)  # ?run=N again in the same session: it wins again
    at.run()
    assert at.session_state["run_choice"] == a
    assert list(at.dataframe[0].value["run"]) == [c, b, a]  # that link has no filters
    at.selectbox(key="run_select").set_value(c).run()
    assert url_values(at, "run") == [str(c)]  # the URL follows the run on screen
    at.query_params["run"] = "nine"
    at.run()
    assert any("run: 'nine' is not allowed" in e.value for e in at.error)
    at.query_params["run"] = "999"  # a run that does not exist: said, not silently replaced
    at.run()
    assert any("Run #999 does not exist here" in w.value for w in at.warning)
    assert at.session_state["run_choice"] == c


def test_rename_tag_and_note_a_run_and_refuse_a_bad_tag(home, engine, make_run):
    from cnn_ablation.storage.runs import find_run

    run_id = make_run(RunConfig(dataset="synthetic"), accuracies=[0.5, 0.6], name="first")
    at = app(PAGES[1])
    at.text_input(key=f"label_name_{run_id}").set_value("renamed")
    at.multiselect(key=f"label_tags_{run_id}").set_value(["bn-study"])
    at.text_area(key=f"label_comment_{run_id}").set_value("lr too high?\nretry with 1e-4")
    at.button(key=f"FormSubmitter:labels_{run_id}-Save").click().run()
    assert not at.exception, at.exception
    run = find_run(engine, run_id)
    assert run is not None
    assert (run.name, run.tags, run.comment) == ("renamed", ("bn-study",),
                                                 "lr too high?\nretry with 1e-4")
    assert list(at.dataframe[0].value["name"]) == ["renamed"]
    assert [list(t) for t in at.dataframe[0].value["tags"]] == [["bn-study"]]
    assert any("note: lr too high?" in c.value for c in at.caption)
    at.multiselect(key=f"label_tags_{run_id}").set_value(["bn-study", "no spaces allowed"])
    at.button(key=f"FormSubmitter:labels_{run_id}-Save").click().run()
    assert any("tag: 'no spaces allowed' is not allowed" in e.value for e in at.error)
    assert getattr(find_run(engine, run_id), "tags", None) == ("bn-study",)


def test_bulk_delete_names_the_runs_and_removes_their_files(home, engine, make_run):
    from cnn_ablation.settings import settings
    from cnn_ablation.storage.runs import find_run

    keep = make_run(RunConfig(dataset="synthetic"), accuracies=[0.5])
    doomed = [make_run(RunConfig(dataset="synthetic", seed=s), accuracies=[0.4, 0.5],
                       name=f"doomed {s}") for s in (1, 2)]
    files = []
    for run_id in doomed:
        log = home / "logs" / f"run-{run_id}-abcdef12.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text("epoch 1\n")
        board = settings().tensorboard_dir(run_id)
        board.mkdir(parents=True)
        (board / "events.out.tfevents.1").write_bytes(b"x")
        files += [log, board]
        from sqlalchemy import update

        from cnn_ablation.storage.engine import session_scope
        from cnn_ablation.storage.models import RunRow

        with session_scope(engine) as session:
            session.execute(update(RunRow).where(RunRow.id == run_id).values(log_path=str(log)))
    at = app(PAGES[1])
    at.session_state["runs_selected"] = doomed  # what two row clicks leave (the table is drawn
    at.session_state["runs_table_gen"] += 1  # again with them selected: a browser test clicks)
    at.run()
    at.button(key="bulk_delete").click().run()
    assert not at.exception, at.exception
    question = " ".join(m.value for m in at.markdown)
    assert "**2 runs**" in question and "4 recorded epochs" in question
    assert all(f"run #{i}" in question for i in doomed) and "doomed 1" in question
    assert f"run-{doomed[0]}-abcdef12.log" in question and "TensorBoard" in question
    at.button(key="dialog_close").click().run()  # "Keep them"
    assert all(find_run(engine, i) for i in doomed) and all(f.exists() for f in files)
    at.button(key="bulk_delete").click().run()
    at.button(key="confirm_delete").click().run()
    assert not at.exception, at.exception
    assert [find_run(engine, i) for i in doomed] == [None, None]
    assert not any(f.exists() for f in files)
    assert f"Runs #{doomed[0]}, #{doomed[1]} deleted" in [t.value for t in at.toast]
    assert list(at.dataframe[0].value["run"]) == [keep]
    assert at.session_state["run_choice"] is None  # nothing under the cursor
    assert not [b for b in at.button if (b.key or "").startswith(("delete_", "bulk_"))]


def test_batchnorm_lag_on_few_images_is_explained_beside_the_curve(home, engine, make_run):
    lag = [(0.55, 0.30), (0.85, 0.38)]  # 47 points behind after 2 epochs
    small = _finished(engine, make_run, RunConfig(dataset="synthetic", epochs=2), lag)
    no_bn = _finished(engine, make_run, RunConfig(dataset="synthetic", epochs=2, seed=1,
                                                  bn=(0, 0, 0, 0, 0)), lag)
    close = _finished(engine, make_run, RunConfig(dataset="synthetic", epochs=2, seed=2),
                      [(0.55, 0.50), (0.85, 0.70)])
    many = _finished(engine, make_run, RunConfig(dataset="mnist", epochs=5, seed=3),
                     [(0.5, 0.2)] * 4 + [(0.85, 0.38)])  # 54,000 images, 5 epochs
    at = app(PAGES[1])

    def hints(run_id):
        at.selectbox(key="run_select").set_value(run_id).run()
        assert not at.exception, at.exception
        return [i.value for i in at.info if "moving mean and variance" in i.value]

    (hint,) = hints(small)
    assert "Validation accuracy (38.0 %) is 47 points below training (85.0 %)" in hint
    assert "after 2 epochs on 900 training images" in hint and "BatchNorm off" in hint
    assert hints(no_bn) == [] and hints(close) == [] and hints(many) == []


def test_runs_page_shows_the_gpu_and_slot_of_a_running_and_a_finished_run(home, engine,
                                                                          make_run):
    done = make_run(RunConfig(dataset="synthetic"), accuracies=[0.4], device="gpu:1 slot 2/2",
                    host="node-b")
    running = make_run(RunConfig(dataset="synthetic", seed=1), accuracies=[0.3],
                       status="running", device="gpu:0 slot 1/2", host="node-a")
    at = app(PAGES[1])
    table = at.dataframe[0].value
    assert dict(zip(table["run"], table["device"], strict=True)) == {
        running: "gpu:0 slot 1/2", done: "gpu:1 slot 2/2"}
    assert at.session_state["run_choice"] == running
    assert any("device gpu:0 slot 1/2 on node-a" in text for text in unescaped(at.caption))
    at.selectbox(key="run_select").set_value(done).run()
    assert not at.exception, at.exception
    assert any("device gpu:1 slot 2/2 on node-b" in text for text in unescaped(at.caption))


def unescaped(elements) -> list[str]:
    """Texts as the page shows them (`common.plain` escapes punctuation with backslashes)."""
    return [e.value.replace("\\", "") for e in elements]


# --- New run: messages at the field, limits in words, a form that survives page switches -------
def test_every_bad_number_is_named_at_once_not_only_the_first(home, engine):
    at = app()
    at.selectbox(key="data").set_value("synthetic").run()
    at.number_input(key="epochs").set_value(0).run()
    at.number_input(key="batch_size").set_value(100_000_000).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("epochs: 0 is not allowed") for e in errors), errors
    assert any(e.startswith("batch_size: 100000000 is not allowed") for e in errors), errors
    launch = next(e for e in errors if e.startswith("Cannot launch"))
    assert "Epochs 0 is not allowed" in launch and "Batch size 100000000 is not allowed" in launch
    assert all(b.disabled for b in at.button if b.key == "launch")
    assert list_runs(engine) == []


def test_a_bad_number_is_a_message_at_its_field_and_the_summary_stays(home, engine):
    at = app()
    at.selectbox(key="data").set_value("fashion_mnist").run()
    before = total_params(at)
    at.number_input(key="epochs").set_value(0).run()
    assert not at.exception
    assert total_params(at) == before  # still Fashion-MNIST's shape, not another dataset's
    assert next(m for m in at.metric if m.label == "Input").value == "28×28×1"
    errors = [e.value for e in at.error]
    assert any(e.startswith("epochs: 0 is not allowed") for e in errors), errors
    assert any(e.startswith("Cannot launch: Epochs 0 is not allowed") for e in errors), errors
    at.number_input(key="seeds").set_value(51).run()
    at.number_input(key="epochs").set_value(2).run()
    errors = [e.value for e in at.error]
    assert any("Seeds: 51 is over the limit of 50" in e for e in errors), errors
    assert all(b.disabled for b in at.button if b.key == "launch")
    assert list_runs(engine) == []


def test_the_form_keeps_its_values_after_visiting_another_page(home):
    at = app()
    at.selectbox(key="data").set_value("synthetic").run()
    at.slider(key="dropout").set_value(0.3).run()
    at.number_input(key="limit_train").set_value(5000).run()
    at.toggle(key="bn_conv_3").set_value(False).run()
    at.switch_page(PAGES[1]).run()
    at.switch_page(PAGES[0]).run()
    assert at.selectbox(key="data").value == "synthetic"
    assert at.slider(key="dropout").value == 0.3
    assert at.number_input(key="limit_train").value == 5000
    assert at.toggle(key="bn_conv_3").value is False


def test_every_switch_has_its_own_name_and_the_summary_every_layer(home):
    at = app()
    labels = [t.label for t in at.toggle]
    assert labels == [f"BatchNorm after {n}" for n in ("conv_1", "conv_2", "conv_3", "conv_4",
                                                      "dense_1")]
    table = at.table[0].value  # a static table: every layer, no scroll bar
    assert len(table) == 20 and {"dense_1", "output"} <= set(table["layer"])
    assert table.set_index("layer").loc["dense_1", "params"] == "401,536"


# --- Compare: the selection in the URL, the CSV, plurals --------------------------------------
def test_compare_names_runs_by_their_name_or_seed_and_tells_configs_with_one_label_apart(
        home, engine, make_run):
    """Three runs of one config read "#2 BN … · drop 0.3" alike in the tables; two configs that
    differ only in the learning rate shared one entry's text in "all runs of one config"."""
    same = RunConfig(dataset="synthetic", dropout=0.3)
    a = make_run(same, accuracies=[0.5], name="lr warm-up")
    b = make_run(RunConfig(dataset="synthetic", dropout=0.3, seed=1), accuracies=[0.6])
    c = make_run(RunConfig(dataset="synthetic", dropout=0.3, seed=2), accuracies=[0.7],
                 name="third try")
    d = make_run(RunConfig(dataset="synthetic", dropout=0.3, learning_rate=0.001),
                 accuracies=[0.4])
    at = app(PAGES[2])
    at.multiselect(key="compare_ids").set_value([a, b, c]).run()
    assert not at.exception, at.exception
    rows = list(at.dataframe[-1].value["run"])  # the results table
    assert rows == [f"#{a} lr warm-up", f"#{b} BN 1·1·1·1·1 · drop 0.3 · seed 1", f"#{c} third try"]
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert f"#{a} lr warm-up · validation" in [t["name"] for t in figure["data"]]
    texts = at.selectbox(key="variant").options  # as the picker shows them
    mine = [t for t in texts if t.startswith("BN 1·1·1·1·1 · drop 0.3 · synthetic")]
    assert len(mine) == 2 and len(set(mine)) == 2, texts
    assert any(f"runs #{a}–#{c} (3 runs)" in t for t in mine) and \
        any(f"run #{d} (1 run)" in t for t in mine), mine


def test_compare_takes_its_runs_from_the_url_and_writes_them_back(home, engine, make_run):
    a = make_run(RunConfig(dataset="synthetic"), accuracies=[0.5, 0.7])
    b = make_run(RunConfig(dataset="synthetic", seed=1), accuracies=[0.4, 0.6])
    c = make_run(RunConfig(dataset="synthetic", seed=2), accuracies=[0.3, 0.5])
    at = app(PAGES[2])
    assert at.multiselect(key="compare_ids").value == [b, c]  # without a link: the latest two
    at.query_params["runs"] = f"{c},{a}"  # a pasted link
    at.run()
    assert not at.exception, at.exception
    assert at.multiselect(key="compare_ids").value == [c, a]
    at.multiselect(key="compare_ids").set_value([b]).run()
    assert at.query_params["runs"] in (str(b), [str(b)])
    assert any("Comparing 1 run." in c.value for c in at.caption)


def test_compare_csv_names_each_run_with_its_times(home, engine, make_run):
    import pandas as pd

    from cnn_ablation.storage import listings
    from cnn_ablation.storage.curves import EPOCH_CACHE
    from cnn_ablation.storage.run_filters import RunFilter
    from cnn_ablation.ui.common import epochs_csv

    run = make_run(RunConfig(dataset="synthetic"), accuracies=[0.5, 0.7], name="baseline")
    rows = listings.run_rows(engine, RunFilter(ids=(run,)),
                             columns=[*listings.LIST_COLUMNS, "config_json"])
    epochs, _ = EPOCH_CACHE.read(engine, [run])
    import io

    csv = pd.read_csv(io.StringIO(epochs_csv(epochs, rows)))
    # every config field, not only the short label (learning rate, batch size, seed, limit, ...)
    assert {"learning_rate", "batch_size", "seed", "limit_train", "bn", "dropout",
            "val_split"} <= set(csv.columns)
    assert csv["learning_rate"][0] == 0.0005 and csv["bn"][0] == "1,1,1,1,1"
    assert list(csv.columns[:8]) == ["run_id", "run_name", "config", "dataset", "status",
                                     "created_at", "started_at", "finished_at"]
    assert list(csv["epoch"]) == [1, 2] and set(csv["run_name"]) == {"baseline"}
    assert set(csv["dataset"]) == {"synthetic"} and set(csv["status"]) == {"completed"}
    stamp = pd.Timestamp(csv["finished_at"][0])
    assert stamp.tzinfo is not None and stamp.year >= 2024  # ISO 8601 with its zone


def test_plurals():
    from cnn_ablation.ui.common import plural

    assert plural(1, "run") == "1 run" and plural(2, "run") == "2 runs"
    assert plural(0, "run") == "0 runs" and plural(1200, "run") == "1,200 runs"


# --- Figures -------------------------------------------------------------------------------------
def epochs_of(*runs):
    import pandas as pd

    rows = []
    for run_id, accuracies in runs:
        for epoch, acc in enumerate(accuracies, start=1):
            rows.append({"run_id": run_id, "epoch": epoch, "loss": 2.0 / epoch, "accuracy": acc,
                         "val_loss": 2.2 / epoch, "val_accuracy": acc - 0.05, "seconds": 10.0})
    return pd.DataFrame(rows)


def test_a_run_keeps_its_colour_and_label_whatever_is_drawn_beside_it():
    from cnn_ablation.ui.figures import curves_figure, run_colour

    frame = epochs_of((3, [0.5, 0.6]), (7, [0.4, 0.5]))
    one = curves_figure(frame, {7: "BN off"})
    two = curves_figure(frame, {3: "BN on", 7: "BN off"})
    colour = {t.name: t.line.color for t in two.data}
    assert {t.line.color for t in one.data} == {run_colour(7)}
    assert colour["#7 BN off · validation"] == run_colour(7) != run_colour(3)
    assert [t.name for t in one.data][:2] == ["#7 BN off · train", "#7 BN off · validation"]
    assert two.layout.hovermode == "x unified"


def test_smoothing_draws_the_raw_curve_faint_behind_and_log_scale_sets_the_loss_axis():
    import numpy as np

    from cnn_ablation.ui.figures import ChartOptions, curves_figure, ema

    frame = epochs_of((1, [0.2, 0.9, 0.3, 0.8]))
    plain_figure = curves_figure(frame, {1: "a"})
    smooth = curves_figure(frame, {1: "a"}, options=ChartOptions(smoothing=0.6, log_loss=True))
    assert len(smooth.data) == 2 * len(plain_figure.data)
    raw = [t for t in smooth.data if t.opacity == 0.25]
    assert len(raw) == len(plain_figure.data) and all(t.showlegend is False for t in raw)
    smoothed = next(t for t in smooth.data if t.name == "#1 a · train" and t.opacity is None)
    assert list(smoothed.y) == list(ema(np.array([0.2, 0.9, 0.3, 0.8]), 0.6))
    assert smoothed.y[1] < 0.9 and smoothed.y[0] == pytest.approx(0.2)  # debiased start
    assert smooth.layout.yaxis2.type == "log" and plain_figure.layout.yaxis2.type is None


def test_the_step_axis_draws_sampled_steps_and_leaves_out_runs_without_them():
    import pandas as pd

    from cnn_ablation.ui.figures import ChartOptions, curves_figure, missing_runs

    frame = epochs_of((1, [0.5, 0.6]), (2, [0.4, 0.5]))
    steps = pd.DataFrame({"run_id": [1, 1, 1], "epoch": [1, 1, 2], "step": [10, 40, 90],
                          "loss": [2.3, 1.5, 1.0], "accuracy": [0.1, 0.3, 0.5],
                          "recorded_at": [100.0, 101.0, 102.0]})
    options = ChartOptions(x="step")
    figure = curves_figure(frame, {1: "a", 2: "b"}, options=options, steps=steps)
    names = [t.name for t in figure.data]
    assert "#1 a · train (steps)" in names and not any(n.startswith("#2") for n in names)
    validation = next(t for t in figure.data if t.name == "#1 a · validation")
    assert list(validation.x) == [45.0, 90.0]  # epoch x steps per epoch (90 / 2)
    assert missing_runs(frame, {1: "a", 2: "b"}, options, steps) == [2]
    timed = curves_figure(frame, {1: "a"}, options=ChartOptions(x="time"), steps=steps)
    assert list(next(t for t in timed.data if t.name == "#1 a · validation").x) == [10.0, 20.0]


def test_study_chart_ticks_do_not_repeat_and_one_epoch_is_a_visible_marker():
    import pandas as pd

    from cnn_ablation.ui.figures import band_figure

    curves = pd.DataFrame({"cell": ["on", "off"], "epoch": [1, 1], "mean": [0.871, 0.878],
                           "std": [0.002, 0.003], "n": [2, 2]})
    figure = band_figure(curves)
    assert figure.layout.yaxis.tickformat in (".1%", ".2%")  # 87.1 %, not 87 % twice
    assert all(t.mode == "markers" and t.marker.size >= 10 for t in figure.data)
    assert all(t.error_y.array is not None for t in figure.data)


def test_the_run_shows_the_tail_of_its_log_and_its_tensorboard_logdir(home, engine, make_run):
    from cnn_ablation.settings import settings

    log = home / "logs" / "run-1-0123abcd.log"
    log.parent.mkdir()
    log.write_text("".join(f"line {i}\n" for i in range(5_000)))  # longer than the tail
    run_id = make_run(RunConfig(dataset="synthetic"), "running", accuracies=[0.3],
                      log_path=str(log))
    at = app(PAGES[1])
    assert [e.label for e in at.expander if e.label == "Log and TensorBoard"]
    assert not any("line 4999" in c.value for c in at.code)  # closed: not read, not drawn
    at.session_state["run_log_open"] = True  # what opening the expander does
    at.run()
    code = [c.value for c in at.code if "line 4999" in c.value]
    assert code and "line 4800" in code[0] and "line 4799" not in code[0]  # the last 200 lines
    logdir = settings().tensorboard_dir(run_id)
    assert any(f"tensorboard --logdir {logdir}" == c.value for c in at.code)
    with log.open("a") as f:
        f.write("line 5000\n")
    at.run()  # what the live refresh does
    assert any("line 5000" in c.value for c in at.code)


def test_the_runs_config_and_diagnostics_are_drawn_only_when_opened(home, engine, make_run):
    report = {"class_names": ["a", "b"], "confusion": [[9, 1], [2, 8]]}
    run_id = make_run(RunConfig(dataset="synthetic", dropout=0.3), accuracies=[0.5, 0.7],
                      test_report_json=json.dumps(report))
    at = app(PAGES[1])
    labels = [e.label for e in at.expander]
    assert "Config, device and timing" in labels and any("Diagnostics" in x for x in labels)
    # closed: only the curves are drawn (a closed expander's charts would still cost the browser
    # Plotly's and the code view's JavaScript on the first visit)
    assert len(at.get("plotly_chart")) == 1
    assert not at.json
    at.session_state["run_diagnostics_open"] = True
    at.session_state["run_config_open"] = True
    at.run()
    assert not at.exception, at.exception
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(figures) == 2  # the curves and the confusion matrix (no layer norms were saved)
    assert figures[1]["data"][0]["type"] == "heatmap"
    assert json.loads(at.json[0].proto.body)["dropout"] == 0.3
    assert list(at.dataframe[1].value["images"]) == [10, 10]  # per class, from the report
    assert at.session_state["run_choice"] == run_id


def test_a_run_cancelled_before_its_first_epoch_does_not_promise_curves(home, engine, make_run):
    from cnn_ablation.storage import lifecycle

    run_id = make_run(RunConfig(dataset="synthetic"), "queued")
    lifecycle.claim(engine, "w", "h", "cpu", 60.0)
    lifecycle.finish(engine, run_id, "cancelled", worker_id="w", error="cancelled by the user")
    at = app(PAGES[1])
    captions = " ".join(c.value for c in at.caption)
    assert "the curves appear when the first epoch ends" not in captions
    assert "No curves: it was cancelled before its first epoch ended" in captions
    assert "Retry queues it again" in captions


def test_a_run_on_jax_says_why_it_has_no_tensorboard_files_or_layer_norms(home, engine,
                                                                          make_run):
    """TensorBoard files and per-layer norms are TensorFlow's; a run trained on another backend
    says so where they would be, and its device reads with the backend in the table."""
    report = {"class_names": ["a", "b"], "confusion": [[9, 1], [2, 8]]}
    make_run(RunConfig(dataset="synthetic"), accuracies=[0.5], backend="jax", device="cpu",
             test_report_json=json.dumps(report))
    at = app(PAGES[1])
    assert list(at.dataframe[0].value["device"]) == ["cpu · jax"]
    for key in ("run_log_open", "run_config_open", "run_diagnostics_open"):
        at.session_state[key] = True
    at.run()
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "No TensorBoard files: they are written only when a run trains on the TensorFlow " \
           "backend, and this one trained on jax" in captions
    assert not any(c.value.startswith("tensorboard --logdir") for c in at.code)
    assert "gradient and weight norms are measured only on the TensorFlow backend" in captions
    assert "Keras on jax" in captions


def test_bulk_cancel_and_compare_several_selected_runs(home, engine, make_run):
    from cnn_ablation.storage.runs import find_run

    done = make_run(RunConfig(dataset="synthetic"), accuracies=[0.5])
    queued = make_run(RunConfig(dataset="synthetic", seed=1), "queued")
    running = make_run(RunConfig(dataset="synthetic", seed=2), "running", accuracies=[0.3])
    at = app(PAGES[1])
    at.session_state["runs_selected"] = [done, queued, running]
    at.session_state["runs_table_gen"] += 1
    at.run()
    assert any("3 runs selected" in m.value for m in at.markdown)
    assert at.button(key="bulk_cancel").label == "Cancel 2"  # the completed one has nothing to stop
    assert at.button(key="bulk_delete").label == "Delete 2…"  # a running run is kept
    at.button(key="bulk_cancel").click().run()
    assert getattr(find_run(engine, queued), "status", None) == "cancelled"
    running_now = find_run(engine, running)
    assert running_now is not None and running_now.status == "running"
    assert running_now.cancel_requested  # it stops after its current epoch
    at.button(key="bulk_compare").click().run()
    assert not at.exception, at.exception
    assert url_values(at, "runs") == [f"{done},{queued},{running}"]
    assert at.title[0].value == "Compare runs"
