"""Read models on a real SQLite file: paging, filters and sort in SQL give what pandas computes
from the same rows; the change token moves exactly when a listing may have changed; the shared
epoch cache reads only new epochs and stays within its bound; curves are downsampled to a fixed
budget keeping their ends and extremes; the CLI's tables print as pandas prints them."""

import base64
import json
import math
import sqlite3

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from cnn_ablation.config import RunConfig
from cnn_ablation.run_report import text_table
from cnn_ablation.storage import lifecycle, listings, polling, run_filters
from cnn_ablation.storage.curves import EpochCache
from cnn_ablation.storage.listings import SORTS
from cnn_ablation.storage.run_filters import RunFilter
from cnn_ablation.storage.runs import delete_run, delete_runs, update_labels
from cnn_ablation.ui.figures import POINT_BUDGET, curves_figure, downsample, minmax_indices
from tests.support import TEST_WORKER


@pytest.fixture
def many_runs(engine, make_run):
    """27 runs: three datasets, every final status and active ones, names, no-epoch runs, a
    run whose validation metrics are missing, ties in best accuracy."""
    rng = np.random.default_rng(7)
    datasets = ["synthetic", "synthetic:300", "mnist"]
    statuses = ["completed", "failed", "cancelled", "diverged", "running", "queued"]
    ids = []
    for i in range(27):
        status = statuses[i % len(statuses)]
        epochs = [] if status == "queued" or i % 7 == 3 else \
            [round(float(a), 3) for a in rng.uniform(0.1, 0.9, size=1 + i % 5)]
        if i in (4, 10):
            epochs = [0.5, 0.8]  # the same best accuracy in two runs: ties go newest first
        ids.append(make_run(RunConfig(dataset=datasets[i % 3], seed=i,
                                      dropout=(0.0, 0.25, 0.5)[i % 3]), status, epochs,
                            name=("sweep", "", "Baseline run", "")[i % 4]))
    lifecycle.record_epoch(engine, ids[4], TEST_WORKER, 3,  # running: an epoch without val_*
                           {"loss": 1.0, "accuracy": 0.6, "val_loss": None,
                            "val_accuracy": None}, seconds=1.0)
    return ids


def expected_frame(home) -> pd.DataFrame:
    """Every run with its aggregates, computed by pandas from the raw tables."""
    with sqlite3.connect(home / "ablation.db") as db:
        runs = pd.read_sql("SELECT id, name, label, dataset, status, test_accuracy FROM runs", db)
        epochs = pd.read_sql("SELECT run_id, epoch, accuracy, val_accuracy, val_loss "
                             "FROM epoch_metrics", db)
    epochs = epochs.sort_values(["run_id", "epoch"])
    agg = epochs.groupby("run_id").agg(epochs_done=("epoch", "size"),
                                       best_val_accuracy=("val_accuracy", "max"),
                                       last_epoch=("epoch", "max"))
    last = epochs.groupby("run_id").tail(1).set_index("run_id")[
        ["val_accuracy", "accuracy", "val_loss"]].rename(columns=lambda c: f"final_{c}")
    frame = runs.set_index("id").join(agg).join(last).reset_index()
    frame["epochs_done"] = frame["epochs_done"].fillna(0).astype(int)
    return frame


def pandas_page(frame: pd.DataFrame, filters: RunFilter, sort: str, page: int, per_page: int):
    if filters.statuses:
        frame = frame[frame["status"].isin(filters.statuses)]
    if filters.datasets:
        frame = frame[frame["dataset"].isin(filters.datasets)]
    if filters.text:
        needle = filters.text.lower()
        frame = frame[frame["name"].str.lower().str.contains(needle, regex=False)
                      | frame["label"].str.lower().str.contains(needle, regex=False)]
    column, descending = SORTS[sort]
    if column == "id":
        frame = frame.sort_values("id", ascending=not descending)
    else:  # NULLs last, ties newest first
        frame = frame.assign(_missing=frame[column].isna()).sort_values(
            ["_missing", column, "id"], ascending=[True, not descending, False])
    return frame.iloc[(page - 1) * per_page: page * per_page], len(frame)


FILTERS = [RunFilter(), RunFilter(statuses=("completed", "running")),
           RunFilter(datasets=("mnist",)), RunFilter(text="baseline"),
           RunFilter(statuses=("completed",), datasets=("synthetic", "mnist"), text="SWEEP"),
           RunFilter(text="50%_")]  # LIKE's wildcards are matched as typed


@pytest.mark.parametrize("sort", list(SORTS))
def test_pages_filters_and_sort_in_sql_equal_pandas_on_the_same_rows(home, engine, many_runs,
                                                                      sort):
    frame = expected_frame(home)
    for filters in FILTERS:
        for per_page in (5, 50):
            for page in (1, 2, 6):
                got = listings.runs_page(engine, filters, sort, page, per_page)
                want, total = pandas_page(frame, filters, sort, min(page, got.pages), per_page)
                assert got.total == total
                assert got.pages == max(1, math.ceil(total / per_page))
                assert [r["id"] for r in got.rows] == want["id"].tolist(), (filters, page)
                for row, (_, expected) in zip(got.rows, want.iterrows(), strict=True):
                    for column in ("epochs_done", "best_val_accuracy", "last_epoch",
                                   "final_val_accuracy", "final_accuracy", "final_val_loss",
                                   "test_accuracy"):
                        value, wanted = row[column], expected[column]
                        assert (value is None and pd.isna(wanted)) or value == pytest.approx(
                            wanted), (column, row["id"])


def test_a_page_past_the_end_shows_the_last_page(engine, many_runs):
    page = listings.runs_page(engine, RunFilter(), "newest first", page=99, per_page=10)
    assert (page.page, page.pages, page.total, page.first) == (3, 3, 27, 21)
    assert [r["id"] for r in page.rows] == sorted(many_runs, reverse=True)[20:]
    empty = listings.runs_page(engine, RunFilter(datasets=("cifar100",)))
    assert (empty.rows, empty.total, empty.pages, empty.first) == ([], 0, 1, 0)


def test_all_rows_and_the_frame_agree_with_pandas(home, engine, many_runs):
    frame = expected_frame(home).sort_values("id")
    rows = listings.run_rows(engine)
    assert [r["id"] for r in rows] == frame["id"].tolist()
    assert [r["epochs_done"] for r in rows] == frame["epochs_done"].tolist()
    full = listings.runs_frame(engine, statuses=["completed"])
    completed = frame[frame["status"] == "completed"]
    assert full["id"].tolist() == completed["id"].tolist()
    assert full["best_val_accuracy"].tolist() == pytest.approx(
        completed["best_val_accuracy"].tolist(), nan_ok=True)
    assert "config_json" in full.columns and "traceback" in full.columns  # every stored column


def test_the_change_token_moves_when_a_listing_may_change_and_only_then(engine, make_run):
    old_one, old_two = (make_run(RunConfig(dataset="synthetic", seed=s), accuracies=[0.2])
                        for s in (10, 11))
    done = make_run(RunConfig(dataset="synthetic"), accuracies=[0.5])
    running = make_run(RunConfig(dataset="synthetic", seed=1), "running", [0.4])
    token = polling.change_token
    before = token(engine)
    assert token(engine) == before  # nothing happened
    changes = [
        lambda: lifecycle.report_progress(engine, running, TEST_WORKER, "training", 2, 10, 100),
        lambda: lifecycle.record_epoch(engine, running, TEST_WORKER, 2, {"loss": 1.0},
                                       seconds=1.0),
        lambda: lifecycle.request_cancel(engine, running),
        lambda: make_run(RunConfig(dataset="synthetic", seed=2), "queued"),
        lambda: lifecycle.finish(engine, running, "cancelled"),
        lambda: delete_run(engine, done),
        # several at once, none of them the newest nor active (what the Runs page's bulk
        # Delete and a study's delete do): the deletion counter moves the token
        lambda: delete_runs(engine, [old_one, old_two]),
    ]
    for change in changes:
        before = token(engine)
        change()
        assert token(engine) != before, change


def test_the_epoch_cache_reads_only_new_epochs_and_stays_within_its_bound(engine, make_run):
    runs = [make_run(RunConfig(dataset="synthetic", seed=s), "running", [0.1, 0.2, 0.3])
            for s in range(4)]
    cache = EpochCache(max_rows=7)
    frame, read = cache.read(engine, runs[:2])
    assert read == 6 and frame["run_id"].tolist() == [runs[0]] * 3 + [runs[1]] * 3
    assert cache.rows_held == 6
    frame, read = cache.read(engine, runs[:2])
    assert read == 0 and len(frame) == 6  # held and current: nothing read
    lifecycle.record_epoch(engine, runs[1], TEST_WORKER, 4, {"accuracy": 0.4}, seconds=1.0)
    frame, read = cache.read(engine, runs[:2])
    assert read == 1  # only the new epoch
    assert frame[frame["run_id"] == runs[1]]["epoch"].tolist() == [1, 2, 3, 4]
    frame, read = cache.read(engine, runs[2:])  # 7 more rows: the oldest runs make room
    assert read == 6 and len(frame) == 6
    assert cache.rows_held <= 7 and len(cache) == 2
    frame, read = cache.read(engine, runs[:1])  # dropped: read again, whole
    assert read == 3 and frame["epoch"].tolist() == [1, 2, 3]
    cache.forget(engine, runs[0])
    assert cache.rows_held <= 7 and cache.read(engine, [runs[0]])[1] == 3


def test_the_shared_epoch_cache_is_bounded_however_many_runs_are_read(engine, make_run):
    runs = [make_run(RunConfig(dataset="synthetic", seed=s), accuracies=[0.1] * 5)
            for s in range(12)]
    cache = EpochCache(max_rows=20)
    for start in range(0, 12, 3):
        cache.read(engine, runs[start:start + 3])
        assert cache.rows_held <= 20
    assert cache.rows_held == 20 and len(cache) == 4  # the 4 runs read last


@pytest.mark.parametrize("n", [0, 1, 2, 499, 500, 501, 1_000, 20_000])
def test_the_downsampler_keeps_ends_and_extremes_within_its_budget(n):
    rng = np.random.default_rng(n)
    y = np.cumsum(rng.normal(size=n))
    if n > 10:
        y[n // 3] = 1e6  # a spike and a dip that min/max buckets must keep
        y[n // 2] = -1e6
        y[n // 4: n // 4 + 40] = np.nan  # a gap
    keep = minmax_indices(y, 500)
    assert len(keep) <= 500 and len(keep) == len(set(keep))
    assert list(keep) == sorted(keep)
    if n <= 500:
        assert list(keep) == list(range(n))
        return
    assert keep[0] == 0 and keep[-1] == n - 1
    assert np.nanargmax(y) in keep and np.nanargmin(y) in keep
    x, kept = downsample(np.arange(n), y, 500)
    assert len(x) == len(kept) == len(keep) and kept[0] == y[0]


def test_long_curves_reach_the_browser_within_the_point_budget_as_valid_plotly():
    epochs = pd.DataFrame({"run_id": 1, "epoch": np.arange(1, 5001),
                           "loss": np.linspace(2, 0.1, 5000), "accuracy": np.linspace(0, 1, 5000),
                           "val_loss": np.nan, "val_accuracy": np.linspace(0, 0.9, 5000)})
    figure = curves_figure(epochs, {1: "long run"})
    spec = json.loads(figure.to_json())  # as Streamlit sends it
    assert [t["name"] for t in spec["data"]] == ["#1 long run · train", "#1 long run · validation",
                                                 "#1 long run · train"]  # no val_loss: no trace
    xs = [values(t["x"]) for t in spec["data"]]
    assert all(len(x) <= POINT_BUDGET for x in xs)
    assert xs[0][0] == 1 and xs[0][-1] == 5000
    validated = go.Figure(figure.to_dict())  # what Plotly's own validation makes of it
    assert json.loads(validated.to_json()) == spec


def values(array) -> list:
    """A trace's x or y as a list: plotly 7 sends arrays as typed base64 (`bdata`)."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def test_cli_tables_print_as_pandas_prints_them():
    columns = {"id": [1, 12, 10_000], "name": ["", "a long name", "x"],
               "epoch": ["3/10", "10/10 (ep 4: 1/2)", "0/5"], "best val": ["71.9 %", "", "–"]}
    assert text_table(columns) == pd.DataFrame(columns).to_string(index=False)
    epochs = {"epoch": [1, 2, 3], "loss": [0.5, float("nan"), 1234.56789],
              "val_loss": [None, None, None], "seconds": [12.5, 3.0, 0.25]}
    assert text_table(epochs, float_format=lambda v: f"{v:.4f}") == \
        pd.DataFrame(epochs).to_string(index=False, float_format="%.4f")


# --- filters by config field, tag and metric range (SQLite's JSON1 and PostgreSQL's jsonb) ------
def _oracle(config: dict, field: str, op: str, value: str) -> bool:
    """What a condition means, in Python, on one stored config (the SQL must agree)."""
    if field == "bn_off" and op == "contains" and config.get("preset") == "seed" \
            and "network" not in config:
        layers = ("conv_1", "conv_2", "conv_3", "conv_4", "dense_1")
        if value in layers and config["bn"][layers.index(value)] == 0:
            return True
    if field not in config:
        return False
    got = config[field]
    if op == "contains":
        if isinstance(got, list):
            return any(item == value or (isinstance(item, (int, float)) and not isinstance(
                item, bool) and _num(value) == item) for item in got)
        return isinstance(got, str) and value.lower() in got.lower()
    if value.lower() in ("true", "false"):
        return isinstance(got, bool) and (got == (value.lower() == "true")) == (op == "=")
    number = _num(value)
    if number is not None:
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return False
        return {"=": got == number, "!=": got != number, "<": got < number, "<=": got <= number,
                ">": got > number, ">=": got >= number}[op]
    if not isinstance(got, str):
        return False
    return {"=": got == value, "!=": got != value, "<": got < value, "<=": got <= value,
            ">": got > value, ">=": got >= value}[op]


def _num(text):
    try:
        return float(text)
    except ValueError:
        return None


CONDITIONS = [("dropout", ">=", "0.3"), ("dropout", "=", "0.25"), ("dropout", "!=", "0.5"),
              ("dropout", "<", "0.25"), ("optimizer", "=", "adam"), ("optimizer", "!=", "adam"),
              ("bn_off", "contains", "conv_3"), ("bn_off", "contains", "b1_bn"),
              ("bn", "contains", "0"), ("dataset", "contains", "SYNTH"),
              ("epochs", ">", "2"), ("limit_train", "<=", "500"), ("mixed", "=", "true"),
              ("dataset", "=", "mnist"), ("learning_rate", "=", "0.001"),
              ("optimizer", "=", "x' OR 1=1 --")]


@pytest.fixture
def labelled_runs(engine, make_run):
    """Runs with different configs (presets with BN switched off, a network with named BN
    layers, extra fields), tags and metrics. Returns {run id: stored config dict}."""
    from cnn_ablation.storage.runs import update_labels

    made = {}
    for i, (bn, dropout, dataset, epochs) in enumerate([
            ((1, 1, 1, 1, 1), 0.5, "synthetic", 2), ((1, 1, 0, 0, 1), 0.25, "synthetic", 3),
            ((1, 0, 0, 0, 0), 0.0, "mnist", 1), ((1, 1, 1, 1, 1), 0.3, "synthetic:300", 4),
            ((0, 0, 1, 1, 1), 0.25, "mnist", 2)]):
        config = RunConfig(dataset=dataset, bn=bn, dropout=dropout, epochs=epochs, seed=i,
                           limit_train=250 if i % 2 else None, learning_rate=0.001 if i else 0.0005)
        run_id = make_run(config, accuracies=[0.2 + 0.15 * i, 0.3 + 0.15 * i][: 1 + i % 2])
        update_labels(engine, run_id, tags=[("bn", "sweep", "Baseline")[i % 3]] +
                      (["keep"] if i in (1, 3) else []))
        made[run_id] = config.to_dict()
    extra = {**RunConfig(dataset="synthetic").to_dict(), "network": "file:net@0123456789ab",
             "bn_off": ["b1_bn", "b2_bn"], "layer_dropout": [["head_drop", 0.3]],
             "optimizer": "adam", "mixed": True}
    extra.pop("bn")
    run_id = make_run(RunConfig(dataset="synthetic", seed=9), accuracies=[0.9],
                      config_json=json.dumps(extra, sort_keys=True))
    update_labels(engine, run_id, tags=["custom", "keep"])
    made[run_id] = extra
    sgd = {**RunConfig(dataset="synthetic", seed=10).to_dict(), "optimizer": "sgd"}
    run_id = make_run(RunConfig(dataset="synthetic", seed=10), "queued",
                      config_json=json.dumps(sgd, sort_keys=True))
    made[run_id] = sgd
    return made


@pytest.mark.both_backends
def test_config_conditions_in_sql_agree_with_the_stored_configs(engine, labelled_runs):
    for condition in CONDITIONS:
        got = [r["id"] for r in listings.run_rows(engine, RunFilter(conditions=(condition,)))]
        want = [i for i, config in labelled_runs.items() if _oracle(config, *condition)]
        assert got == want, condition
    assert any(_oracle(c, "bn_off", "contains", "conv_3") for c in labelled_runs.values())
    both = (("dropout", "=", "0.25"), ("bn_off", "contains", "conv_1"))
    got = [r["id"] for r in listings.run_rows(engine, RunFilter(conditions=both))]
    assert got == [i for i, c in labelled_runs.items() if all(_oracle(c, *x) for x in both)]
    assert len(got) == 1


@pytest.mark.both_backends
def test_tags_and_metric_ranges_narrow_a_listing_in_sql(engine, labelled_runs):
    def ids(**filters):
        return [r["id"] for r in listings.runs_page(engine, RunFilter(**filters),
                                                        "oldest first").rows]

    every = list(labelled_runs)
    assert ids(tags=("keep",)) == [every[1], every[3], every[5]]
    assert ids(tags=("KEEP", "custom")) == [every[5]]  # every tag, any case
    assert ids(tags=("nothing",)) == []
    # tags that read as a number or a boolean are still text
    update_labels(engine, every[0], tags=["2024", "true", "1e3"])
    for tag in ("2024", "true", "1e3"):
        assert ids(tags=(tag,)) == [every[0]], tag
    assert ids(tags=("2024.0",)) == []
    rows = {r["id"]: r for r in listings.run_rows(engine)}
    for metric in ("best_val_accuracy", "final_val_accuracy", "test_accuracy"):
        for low, high in ((0.2, 0.5), (None, 0.3), (0.5, None), (0.0, 1.0)):
            want = [i for i in every if rows[i][metric] is not None
                    and (low is None or rows[i][metric] >= low)
                    and (high is None or rows[i][metric] <= high)]
            assert ids(metrics=((metric, low, high),)) == want, (metric, low, high)
    mixed = ids(tags=("keep",), metrics=(("best_val_accuracy", 0.5, None),),
                conditions=(("dataset", "contains", "synthetic"),))
    assert mixed == [i for i in (every[3], every[5])
                     if rows[i]["best_val_accuracy"] >= 0.5]
    assert listings.runs_page(engine, RunFilter(tags=("keep",)), per_page=2).total == 3


@pytest.mark.parametrize("text,message", [
    ("dropout >= lots", "value: 'lots' is not allowed with >="),
    ("drop-out = 1", "config field: 'drop-out' is not allowed; allowed: a config field name"),
    ("dropout ~ 1", "config filter: 'dropout ~ 1' is not allowed; allowed: FIELD OP VALUE"),
    ("dropout =", "value: '' is not allowed; allowed: 1 to 200 characters"),
])
def test_bad_config_conditions_are_refused_naming_the_part(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        run_filters.parse_condition(text)


def test_conditions_parse_as_typed():
    assert run_filters.parse_condition(" bn_off contains conv_3 ") == ("bn_off", "contains",
                                                                         "conv_3")
    assert run_filters.parse_condition("dropout>=0.3") == ("dropout", ">=", "0.3")
    assert run_filters.parse_condition("optimizer = adam w") == ("optimizer", "=", "adam w")
