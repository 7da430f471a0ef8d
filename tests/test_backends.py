"""The Keras backend is a worker's choice (issue 23): `worker --backend tensorflow|jax|torch`,
passed to its training processes as KERAS_BACKEND, stored on every run it claims, shown with the
run's device, and a study whose runs trained on different backends or kinds of device says so.
The JAX run is real: a worker process claims it and trains it on the CPU."""

import json

import pandas as pd
import pytest

from cnn_ablation.jobs.slots import Slot, child_env, worker_backend
from cnn_ablation.run_report import device_text
from cnn_ablation.storage import lifecycle
from cnn_ablation.storage.runs import find_run
from cnn_ablation.studies.words import machine_words, plain_words


def test_the_backend_is_the_flag_else_keras_backend_else_tensorflow():
    assert worker_backend(None, {}) == "tensorflow"
    assert worker_backend(None, {"KERAS_BACKEND": "jax"}) == "jax"
    assert worker_backend("tensorflow", {"KERAS_BACKEND": "jax"}) == "tensorflow"
    assert worker_backend(" JAX ", {}) == "jax"


@pytest.mark.parametrize("given,environ,named", [
    ("theano", {}, "--backend: 'theano' is not allowed; allowed: tensorflow, jax, torch"),
    (None, {"KERAS_BACKEND": "numpy"}, "KERAS_BACKEND: 'numpy' is not allowed"),
])
def test_a_backend_keras_does_not_train_on_is_refused_naming_where_it_came_from(given, environ,
                                                                               named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        worker_backend(given, environ)


def test_a_backend_not_installed_is_refused_by_the_worker_before_it_claims(home, cli, engine):
    import importlib.util

    missing = next((b for b in ("torch", "jax") if importlib.util.find_spec(b) is None), None)
    if missing is None:
        pytest.skip("every backend is installed here: nothing to refuse")  # not in CI (no torch)
    assert cli("submit", "--dataset", "synthetic:100", "--epochs", "1").returncode == 0
    out = cli("worker", "--once", "--gpus", "none", "--backend", missing)
    assert out.returncode == 2
    assert f"--backend: {missing} is not installed" in out.stderr and "install it" in out.stderr
    assert find_run(engine, 1).status == "queued"  # nothing claimed


def test_the_training_process_gets_the_workers_backend():
    slot = Slot(device="cpu", cuda_visible_devices="-1")
    assert child_env(slot, None, None, base={}, backend="jax")["KERAS_BACKEND"] == "jax"
    assert child_env(slot, None, None, base={"KERAS_BACKEND": "torch"},
                     backend="tensorflow")["KERAS_BACKEND"] == "tensorflow"
    assert "KERAS_BACKEND" not in child_env(slot, None, None, base={})


def test_the_device_shows_the_backend_when_it_is_not_tensorflow():
    assert device_text("cpu", None) == "cpu" and device_text("cpu", "tensorflow") == "cpu"
    assert device_text("gpu:0", "jax") == "gpu:0 · jax" and device_text(None, "torch") == "torch"


def test_a_claim_stores_the_backend(engine, make_run):
    from cnn_ablation.config import RunConfig

    run_id = make_run(RunConfig(dataset="synthetic"), "queued")
    claimed = lifecycle.claim(engine, "w", "h", "cpu", 5.0, backend="jax")
    assert claimed.id == run_id and claimed.backend == "jax"
    assert find_run(engine, run_id).backend == "jax"


@pytest.mark.both_backends
def test_a_run_resumed_on_another_backend_says_both(engine, make_run):
    """Epochs 1-2 on TensorFlow, the rest resumed from the checkpoint on JAX: the run is
    "tensorflow+jax" (a study sees the mix), and resumed again on JAX it stays so."""
    from cnn_ablation.config import RunConfig

    run_id = make_run(RunConfig(dataset="synthetic", epochs=4), "queued")
    assert lifecycle.claim(engine, "w1", "h", "cpu", 5.0, backend="tensorflow").id == run_id
    assert lifecycle.requeue(engine, run_id, "w1", "/tmp/x.keras", 2, "worker stopped")
    assert lifecycle.claim(engine, "w2", "h", "cpu", 5.0, backend="jax").backend == \
        "tensorflow+jax"
    assert lifecycle.requeue(engine, run_id, "w2", "/tmp/x.keras", 3, "worker stopped")
    assert lifecycle.claim(engine, "w3", "h", "cpu", 5.0, backend="jax").backend == \
        "tensorflow+jax"
    fresh = make_run(RunConfig(dataset="synthetic", seed=1), "queued")  # no checkpoint: its own
    assert lifecycle.claim(engine, "w4", "h", "cpu", 5.0, backend="jax").id == fresh
    assert find_run(engine, fresh).backend == "jax"


def completed(**columns) -> pd.DataFrame:
    rows = [{"cell": c, "seed": s, "status": "completed", "backend": "tensorflow",
             "device_kind": "cpu"} for c in ("base", "no bn") for s in range(3)]
    frame = pd.DataFrame(rows)
    for column, values in columns.items():
        frame[column] = values
    return frame


def test_a_study_on_one_backend_and_device_kind_says_nothing_of_machines():
    assert machine_words(completed()) == []
    assert machine_words(None) == [] and machine_words(completed().iloc[:0]) == []


def test_a_study_whose_runs_trained_on_different_backends_or_devices_says_so():
    mixed = machine_words(completed(backend=["tensorflow"] * 3 + ["jax"] * 3))
    assert len(mixed) == 1
    assert "Keras backends (jax: 3, tensorflow: 3)" in mixed[0] and "confound" not in mixed[0]
    assert "kinds of device" not in mixed[0]
    both = machine_words(completed(backend=["jax"] * 5 + ["torch"],
                                   device_kind=["gpu"] * 3 + ["cpu"] * 3))
    assert "Keras backends (jax: 5, torch: 1) and kinds of device (cpu: 3, gpu: 3)" in both[0]
    # provisional words keep it, beside "provisional"
    words = plain_words({"completed": completed(device_kind=["gpu"] * 5 + ["cpu"])}, 6, 8)
    assert words.startswith("**Mixed machines:**") and "6 of 8" in words


@pytest.mark.slow
def test_a_worker_on_jax_trains_a_run_to_completed_and_the_run_says_jax(home, cli, engine):
    """A real worker with --backend jax claims a queued run, its training process trains it on
    Keras' JAX backend (on the CPU), and the run records jax: in its column, in what the
    training process recorded of itself, in `runs` and `show`. TensorBoard files (written with
    TensorFlow) are not made; the page says why (tests/test_ui_pages)."""
    assert cli("submit", "--dataset", "synthetic:300", "--epochs", "2",
               "--name", "on jax").returncode == 0
    out = cli("worker", "--once", "--gpus", "none", "--backend", "jax", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = find_run(engine, 1)
    assert run.status == "completed", (run.error, run.traceback)
    assert run.backend == "jax" and run.environment["keras_backend"] == "jax"
    assert run.environment["backend_version"]  # jax's own version, asked of jax
    assert run.test_accuracy is not None
    listed = cli("runs")
    assert "cpu · jax" in listed.stdout
    shown = cli("show", "1")
    assert "Keras on jax" in shown.stdout
    assert json.loads(cli("show", "1", "--json").stdout)["backend"] == "jax"
    assert not (home / "tensorboard" / "run-1").exists()
