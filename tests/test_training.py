"""Real Keras runs on `synthetic` data into a temporary SQLite file."""

import pytest

from cnn_ablation.config import RunConfig
from cnn_ablation.storage.curves import epochs_frame, layer_stats_frame
from cnn_ablation.storage.runs import find_run

pytestmark = pytest.mark.slow
pytest.importorskip("keras")
from cnn_ablation.training.pipeline import STEPS_PER_EXECUTION  # noqa: E402
from cnn_ablation.training.run import train_run  # noqa: E402


def test_two_epoch_run_records_each_epoch_and_test_metrics(engine, make_run):
    run_id = make_run(RunConfig(dataset="synthetic", bn=(1, 0, 0, 0, 1), dropout=0.3,
                                     epochs=2), "running")
    assert train_run(engine, run_id) == "completed"
    run = find_run(engine, run_id)
    epochs = epochs_frame(engine, [run_id])
    assert run.status == "completed" and run.finished_at >= run.started_at
    assert epochs["epoch"].tolist() == [1, 2]
    assert epochs[["loss", "accuracy", "val_loss", "val_accuracy"]].notna().all().all()
    assert (epochs["seconds"] > 0).all()
    assert 0 <= run.test_accuracy <= 1 and run.test_loss > 0
    confusion = run.test_report["confusion"]
    assert sum(map(sum, confusion)) == 200  # every synthetic test image counted once


def test_layer_norms_are_recorded_for_every_weighted_layer_each_epoch(engine, make_run):
    run_id = make_run(RunConfig(dataset="synthetic:200", epochs=2), "running")
    assert train_run(engine, run_id) == "completed"
    stats = layer_stats_frame(engine, [run_id])
    layers = {"conv_1", "conv_2", "conv_3", "conv_4", "dense_1", "output"}
    for epoch in (1, 2):
        rows = stats[stats["epoch"] == epoch]
        assert set(rows["layer"]) == layers
        assert (rows["grad_norm"] > 0).all() and (rows["weight_norm"] > 0).all()


def test_absurd_learning_rate_ends_diverged_naming_epoch_and_batch(engine, make_run):
    # queued before new runs were refused past a learning rate of 10: such a stored run still
    # trains, and ends diverged
    absurd = RunConfig(dataset="synthetic", bn=(0, 0, 0, 0, 0), learning_rate=1e30, epochs=3)
    run_id = make_run(RunConfig(dataset="synthetic", bn=(0, 0, 0, 0, 0), epochs=3), "running",
                      config_json=absurd.to_json())
    assert train_run(engine, run_id, interval=0.0) == "diverged"
    run = find_run(engine, run_id)
    assert run.status == "diverged"
    assert "epoch 1" in run.error and "batch" in run.error


def test_an_exception_marks_the_run_failed_with_its_message(engine, home, make_run):
    (home / "gone" / "train" / "a").mkdir(parents=True)
    config = RunConfig(dataset=f"folder:{home}/gone", epochs=1, image_size=(8, 8))
    run_id = make_run(RunConfig(dataset="synthetic"), "running",
                      config_json=config.to_json())  # its files vanished
    assert train_run(engine, run_id) == "failed"
    run = find_run(engine, run_id)
    assert run.status == "failed"
    assert run.error.startswith("DatasetUnavailable: folder dataset") and "test/<class>/" in run.error
    assert "Traceback" in run.traceback


def test_split_arrays_go_to_tensorflow_without_a_copy():
    from cnn_ablation.data import datasets
    from cnn_ablation.training.pipeline import as_tensor, split

    data = datasets.load("synthetic")
    (x_fit, _), (x_val, _) = split(RunConfig(dataset="synthetic", val_split=0.2), data)
    assert len(x_fit) == 800 and len(x_val) == 200
    tensor = as_tensor(x_fit)
    x_fit[3, 0, 0, 0] = 201
    assert int(tensor[3, 0, 0, 0]) == 201  # shares the NumPy buffer
    unaligned = data.x_train.reshape(-1)[1:3073].reshape(1, 32, 32, 3)  # 1 byte off alignment
    assert as_tensor(unaligned) is unaligned  # left for Keras to copy, never a crash


def test_one_test_pass_gives_what_keras_evaluate_gives():
    from cnn_ablation.data import datasets
    from cnn_ablation.training.evaluation import test_metrics
    from cnn_ablation.training.run import compiled_model

    config = RunConfig(dataset="synthetic:300", epochs=1)
    data = datasets.load(config.dataset)
    model = compiled_model(config, data.info)
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=32, verbose=0)
    loss, accuracy, report = test_metrics(model, data)
    keras_loss, keras_accuracy = model.evaluate(data.x_test, data.y_test, batch_size=1000,
                                                verbose=0)
    assert loss == pytest.approx(keras_loss, abs=1e-6)
    assert accuracy == pytest.approx(keras_accuracy, abs=1e-6)
    confusion = report["confusion"]
    assert sum(confusion[i][i] for i in range(10)) == round(accuracy * len(data.y_test))


def event_scalars(folder) -> dict[str, dict[int, float]]:
    """Every scalar in a folder's TensorBoard event files, read back with TensorFlow's own
    event reader: {tag: {step: value}}."""
    import tensorflow as tf

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") \
                    else value.simple_value
                scalars.setdefault(value.tag, {})[event.step] = number
    return scalars


def test_steps_are_sampled_within_epochs_and_tensorboard_gets_every_scalar(engine, home,
                                                                           make_run):
    from cnn_ablation.storage.curves import step_rows

    config = RunConfig(dataset="synthetic:1000", epochs=2, batch_size=32)  # 900 fit: 29 batches
    run_id = make_run(config, "running")
    assert train_run(engine, run_id, interval=0.0) == "completed"  # every batch hook sampled
    steps = step_rows(engine, [run_id])
    # the batch hook runs after each call of STEPS_PER_EXECUTION steps (16): steps 16 and 29
    # (a short last call, numbered by its last step, not 32), then 29 + 16 and 58
    assert STEPS_PER_EXECUTION == 16
    assert [r["step"] for r in steps] == [16, 29, 45, 58]
    assert [r["epoch"] for r in steps] == [1, 1, 2, 2]
    epochs = epochs_frame(engine, [run_id])
    by_step = {r["step"]: r for r in steps}
    for epoch, loss, accuracy in zip(epochs["epoch"], epochs["loss"], epochs["accuracy"],
                                     strict=True):  # each epoch's last step is its training loss
        last = by_step[epoch * 29]
        assert (last["loss"], last["accuracy"]) == (loss, accuracy)
    assert all(r["loss"] > 0 and 0 <= r["accuracy"] <= 1 for r in steps)

    folder = home / "tensorboard" / f"run-{run_id}"
    train, validation, test = (event_scalars(folder / part)
                               for part in ("train", "validation", "test"))
    stored = epochs.set_index("epoch")
    for tag, scalars, column in (("epoch_loss", train, "loss"),
                                 ("epoch_accuracy", train, "accuracy"),
                                 ("epoch_loss", validation, "val_loss"),
                                 ("epoch_accuracy", validation, "val_accuracy")):
        assert scalars[tag] == pytest.approx(stored[column].to_dict(), rel=1e-6), (tag, column)
    assert train["batch_loss"] == pytest.approx({r["step"]: r["loss"] for r in steps}, rel=1e-6)
    assert set(train["batch_accuracy"]) == {16, 29, 45, 58}
    run = find_run(engine, run_id)
    assert set(test) == {"epoch_loss", "epoch_accuracy"}
    assert test["epoch_loss"] == pytest.approx({2: run.test_loss}, rel=1e-6)
    assert test["epoch_accuracy"] == pytest.approx({2: run.test_accuracy}, rel=1e-6)


def test_the_test_pass_reports_images_done_of_the_total(engine, make_run):
    from cnn_ablation.data import datasets
    from cnn_ablation.training.evaluation import TestProgress, test_metrics
    from cnn_ablation.training.run import compiled_model
    from tests.conftest import TEST_WORKER

    config = RunConfig(dataset="synthetic:12500", limit_train=64, epochs=1)  # 2,500 test images
    run_id = make_run(config, "running")
    data = datasets.load(config.dataset)
    model = compiled_model(config, data.info)
    seen: list[str] = []

    class Watched(TestProgress):  # the real callback; after each of its writes, what is stored
        def on_predict_batch_end(self, batch, logs=None):
            super().on_predict_batch_end(batch, logs)
            seen.append(find_run(engine, run_id).progress_text)

    test_metrics(model, data, Watched(engine, run_id, TEST_WORKER))
    assert seen == ["testing: 1,000 of 2,500 images", "testing: 2,000 of 2,500 images",
                    "testing: 2,500 of 2,500 images"]
    run = find_run(engine, run_id)
    assert (run.phase, run.progress_batch, run.progress_batches) == ("testing", 2500, 2500)


def test_short_steps_run_sixteen_per_call_and_long_ones_one():
    """16 steps per call only where a step is short: the built-in networks on small images; a
    network of your own or larger images keep one step per call, so progress, stop-now and the
    hang check act between steps."""
    from dataclasses import replace

    from cnn_ablation.training.pipeline import steps_per_execution

    chapter = RunConfig()
    assert steps_per_execution(chapter, (32, 32, 3)) == STEPS_PER_EXECUTION == 16
    assert steps_per_execution(chapter, (64, 64, 3)) == 16
    assert steps_per_execution(chapter, (65, 64, 3)) == 1
    assert steps_per_execution(chapter, (224, 224, 3)) == 1
    own = replace(chapter, network="builder:my_models:resnet@" + "0" * 12)
    assert steps_per_execution(own, (32, 32, 3)) == 1
