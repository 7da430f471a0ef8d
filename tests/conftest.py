import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # tests run on CPU, GPU or not


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh ABLATION_HOME with its own SQLite file, for this test alone."""
    monkeypatch.setenv("ABLATION_HOME", str(tmp_path))
    monkeypatch.delenv("ABLATION_DATABASE_URL", raising=False)
    monkeypatch.setenv("ABLATION_START_WORKER", "0")
    return tmp_path


@pytest.fixture
def engine(home):
    from storage.engine import get_engine

    return get_engine(f"sqlite:///{home / 'ablation.db'}")


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m cnn_ablation ARGS` as a user would, in the repo root."""
    return subprocess.run([sys.executable, "-m", "cnn_ablation", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
