"""More than one process, more than one machine's worth: several runs per GPU (slot logic with a
fake device list) and a stress test of the claim/cancel/finish paths on a real PostgreSQL server
with real worker processes whose children write epochs without TensorFlow."""

import os
import random
import subprocess
import sys

import pytest
from sqlalchemy import select

from cnn_ablation.config import RunConfig
from cnn_ablation.jobs.launch import submit
from cnn_ablation.jobs.slots import Slot, child_env, make_slots
from cnn_ablation.storage import lifecycle
from cnn_ablation.storage.engine import session_scope
from cnn_ablation.storage.models import EpochMetricRow
from cnn_ablation.storage.runs import list_runs
from tests.support import ROOT, wait_for


def test_k_runs_per_gpu_make_k_slots_per_gpu_each_with_its_share_of_memory(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # a fake device list: no GPU needed
    slots = make_slots("all", runs_per_device=2, gpu_memory=4000)
    assert [s.device for s in slots] == ["gpu:0 slot 1/2", "gpu:0 slot 2/2", "gpu:1 slot 1/2",
                                        "gpu:1 slot 2/2"]
    assert [s.cuda_visible_devices for s in slots] == ["0", "0", "1", "1"]
    env = child_env(slots[2], "sqlite:///x.db", 5.0)
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["ABLATION_GPU_MEMORY_MB"] == "4000"
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    one = make_slots("0", runs_per_device=1)
    assert [(s.device, s.memory_limit_mb) for s in one] == [("gpu:0", None)]
    assert "ABLATION_GPU_MEMORY_MB" not in child_env(one[0], "sqlite:///x.db", 5.0)


def fake_nvidia_smi(folder, totals_mb):
    """An `nvidia-smi` that answers the two queries slots.py asks, for a fake device list."""
    script = folder / "nvidia-smi"
    memory = "\\n".join(f"{i}, {mb}" for i, mb in enumerate(totals_mb))
    indices = "\\n".join(str(i) for i in range(len(totals_mb)))
    script.write_text("#!/bin/sh\n"
                      f'case "$*" in *memory.total*) printf "{memory}\\n";; '
                      f'*) printf "{indices}\\n";; esac\n')
    script.chmod(0o755)
    return folder


def test_each_slot_gets_its_memory_share_for_tensorflow_and_for_keras_on_jax(monkeypatch,
                                                                             tmp_path):
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path, [80000, 40000])}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # every GPU nvidia-smi lists
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    slots = make_slots("all", runs_per_device=4)
    assert [(s.device, s.memory_limit_mb, s.memory_total_mb) for s in slots[3:5]] == [
        ("gpu:0 slot 4/4", 20000, 80000), ("gpu:1 slot 1/4", 10000, 40000)]
    env = child_env(slots[4], "sqlite:///x.db", 5.0)
    assert (env["CUDA_VISIBLE_DEVICES"], env["ABLATION_GPU_MEMORY_MB"]) == ("1", "10000")
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.2500"  # 10,000 of 40,000 MB
    fixed = make_slots("1", runs_per_device=2, gpu_memory=30000)  # --gpu-memory-mb wins
    assert child_env(fixed[0], "sqlite:///x.db", 5.0)["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.7500"
    whole = make_slots("0")  # one run per GPU: no limit, it grows
    env = child_env(whole[0], "sqlite:///x.db", 5.0)
    assert "ABLATION_GPU_MEMORY_MB" not in env and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in env
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")  # the operator's choice stays
    assert child_env(whole[0], "sqlite:///x.db", 5.0)["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"


def test_the_recorded_environment_names_the_keras_backend_and_its_versions():
    import platform

    import keras
    import numpy as np
    import tensorflow as tf

    from cnn_ablation.training.environment import environment

    env = environment()
    assert env["keras_backend"] == keras.backend.backend() == "tensorflow"
    assert env["backend_version"] == env["tensorflow"] == tf.__version__
    assert (env["keras"], env["numpy"], env["python"]) == (
        keras.__version__, np.__version__, platform.python_version())
    assert env["gpus"] == [d.name for d in tf.config.list_physical_devices("GPU")]
    assert env["device"] == (env["gpus"][0] if env["gpus"] else "cpu")


def test_the_cpu_can_be_shared_too_and_bad_slot_counts_are_refused():
    assert [s.device for s in make_slots("none", runs_per_device=2)] == ["cpu slot 1/2",
                                                                         "cpu slot 2/2"]
    assert make_slots("none") == [Slot("cpu", "-1")]
    for bad in (0, 17):
        with pytest.raises(ValueError, match="--runs-per-gpu"):
            make_slots("none", runs_per_device=bad)
    with pytest.raises(ValueError, match="--gpu-memory-mb"):
        make_slots("none", gpu_memory=1)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_postgresql_stress_4_workers_100_runs_with_cancels_racing_claims(engine, home, capsys):
    ids = submit(engine, [RunConfig(dataset="synthetic:100", epochs=3, seed=s)
                          for s in range(100)])
    env = {**os.environ, "ABLATION_HOME": str(home), "ABLATION_HEARTBEAT_SECONDS": "1",
           "PYTHONUNBUFFERED": "1"}
    outs = [open(home / f"quick-{i}.out", "w") for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.fakes.quick_worker", "--once"],
                              cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
             for out in outs]
    wait_for(lambda: len(list_runs(engine, statuses=["running", "completed"])) >= 8,
             timeout=120, what="the workers to be claiming")
    cancelled = random.Random(7).sample(ids, 30)
    for run_id in cancelled:  # while the workers claim: some queued, some running, some done
        lifecycle.request_cancel(engine, run_id, now=run_id % 2 == 0)
    try:
        for proc in procs:
            assert proc.wait(timeout=600) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    logs = "\n".join((home / f"quick-{i}.out").read_text() for i in range(4))
    runs = {r.id: r for r in list_runs(engine)}
    claims = {i: logs.count(f"run {i}: started on") for i in ids}
    double = [i for i, n in claims.items() if n > 1]
    left = [i for i, r in runs.items() if r.status in ("queued", "running")]
    with session_scope(engine, write=False) as session:
        epochs = session.execute(select(EpochMetricRow.run_id, EpochMetricRow.recorded_at)).all()
    written_after_end = [rid for rid, at in epochs
                         if runs[rid].finished_at is not None and at > runs[rid].finished_at]
    with capsys.disabled():
        print(f"\nPostgreSQL stress: runs {len(ids)}, workers 4, claims {sum(claims.values())}, "
              f"double claims {len(double)}, left queued/running {len(left)}, cancels "
              f"{len(cancelled)}, epochs written after a run ended {len(written_after_end)}")
    assert (double, left, written_after_end) == ([], [], [])
    assert {runs[i].status for i in cancelled} <= {"cancelled", "completed"}
    assert all(runs[i].status == "completed" for i in ids if i not in cancelled)
    assert "database is locked" not in logs and "Traceback" not in logs
