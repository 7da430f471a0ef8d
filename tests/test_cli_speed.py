"""The everyday commands start fast: `runs`, `show`, `cancel` and `submit` import neither
TensorFlow nor pandas nor Plotly (each command in a fresh interpreter, as a user runs it; the
modules it loaded are read from `sys.modules` when it is done). benchmarks/dashboard_scale.py
times them on 10,000 runs."""

import json
import os
import subprocess
import sys

import pytest

from cnn_ablation.config import RunConfig
from tests.support import ROOT

HEAVY = ("tensorflow", "keras", "pandas", "plotly")
PROBE = """
import contextlib, io, json, sys
from cnn_ablation.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "stdout": out.getvalue(),
                  "loaded": sorted(m for m in HEAVY if m in sys.modules)}))
""".replace("HEAVY", repr(HEAVY))


def command(home, *args: str) -> dict:
    env = {**os.environ, "ABLATION_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [("runs",), ("runs", "--json"), ("show", "{done}"),
                                  ("show", "{done}", "--json"), ("cancel", "{queued}"),
                                  ("submit", "--dataset", "synthetic", "--epochs", "1")])
def test_everyday_commands_import_neither_tensorflow_nor_pandas_nor_plotly(home, make_run,
                                                                             args):
    ids = {"done": make_run(RunConfig(dataset="synthetic"), accuracies=[0.5, 0.6]),
           "queued": make_run(RunConfig(dataset="synthetic", seed=1), "queued")}
    args = [a.format(**ids) for a in args]
    result = command(home, *args)
    assert result["code"] == 0 and result["stdout"]
    loaded = set(result["loaded"])
    assert not loaded & {"tensorflow", "keras", "plotly"}, loaded
    assert "pandas" not in loaded, loaded


def test_the_cli_itself_loads_no_numpy(home):
    """Parsing and the commands' modules: the cost every command pays before it does anything."""
    out = subprocess.run([sys.executable, "-c", "import sys, cnn_ablation.cli, "
                          "cnn_ablation.run_report, cnn_ablation.storage.listings, "
                          "cnn_ablation.storage.lookups, cnn_ablation.storage.polling; "
                          "print(sorted(m for m in "
                          "('numpy', 'pandas', 'plotly', 'tensorflow') if m in sys.modules))"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "ABLATION_HOME": str(home)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_listing_and_showing_print_the_same_without_pandas(home, make_run):
    run_id = make_run(RunConfig(dataset="synthetic", dropout=0.25), accuracies=[0.5, 0.75],
                      name="a run")
    listed = command(home, "runs")["stdout"].splitlines()
    assert listed[0].split() == ["id", "name", "config", "dataset", "status", "epoch", "best",
                                 "val", "test", "acc", "time", "device"]
    assert listed[1].split()[:3] == [str(run_id), "a", "run"] and "70.0 %" in listed[1]
    shown = json.loads(command(home, "show", str(run_id), "--json")["stdout"])
    assert [e["epoch"] for e in shown["epoch_metrics"]] == [1, 2]
    assert shown["epoch_metrics"][1]["val_accuracy"] == pytest.approx(0.7)
    text = command(home, "show", str(run_id))["stdout"]
    assert " epoch   loss  accuracy  val_loss  val_accuracy  seconds" in text
