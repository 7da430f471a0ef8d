"""benchmarks/gpu_check.py, the product's own worker on a GPU (issue 23), run end to end on the
CPU at a small size: the chapter study queued with the CLI, trained by a real worker on Keras'
JAX backend at K = 2 and 1 runs per device, the table printed and the rows written."""

import json
import re
import subprocess
import sys

import pytest

from tests.support import ROOT


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "rows.json"
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--gpus", "none",
                             "--ks", "2,1", "--images", "120", "--epochs", "1", "--seeds", "1",
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["k"] for r in rows] == [2, 1]
    for row in rows:
        assert row["runs"] == 2 and row["backends"] == ["jax"]  # 2 cells x 1 seed
        assert row["images"] == 2 * 120  # two runs, one epoch each, no validation split
        assert row["wall_s"] > 0 and row["total_images_per_s"] > 0
        assert row["per_run_min"] <= row["per_run_median"] <= row["per_run_max"]
    assert rows[0]["devices"] == ["cpu slot 1/2", "cpu slot 2/2"] and rows[1]["devices"] == ["cpu"]
    assert re.search(r"^\s+2\s+[\d.]+\s+\d+ \(\d+\.\.\d+\)", result.stdout, re.M), result.stdout
    assert "goal <= 120 s" in result.stdout


def test_every_wheel_the_gpu_machine_is_given_is_pinned():
    makefile = (ROOT / "Makefile").read_text()
    wheels = re.search(r"^GPU_WHEELS := (.*)$", makefile, re.M).group(1).split()
    pins = {line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text()
            .splitlines() if "==" in line and not line.startswith("#")}
    assert {"keras", "sqlalchemy", "alembic"} <= {w.lower() for w in wheels}
    assert {w.lower() for w in wheels} <= pins
