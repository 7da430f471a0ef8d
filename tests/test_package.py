"""The installable package (issue 23): `pip install .` builds a wheel holding one package,
cnn_ablation (the repository's storage/ inside it as cnn_ablation.storage), whose plain
dependencies are the runtime only, with a `cnn-ablation` command that works from anywhere.

The wheel is built by pip from a copy of the repository (pip builds in the source tree), and
installed with --no-deps into a folder of its own: the commands below run that copy, from a
folder outside the repository, on this environment's dependencies."""

import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from email.parser import Parser

import pytest

from tests.support import ROOT, free_port, wait_for

DEV_TOOLS = {"pytest", "ruff", "mypy", "playwright", "ray", "jax", "pyyaml"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, the folder it is installed in)."""
    base = tmp_path_factory.mktemp("package")
    source = base / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "ablation-data", "test-artifacts", "__pycache__", "*.egg-info",
        "build", ".mypy_cache", ".ruff_cache", ".pytest_cache", "benchmarks"))
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(source)], check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = wheels.glob("cnn_ablation-*.whl")
    target = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, text=True,
                   timeout=600)
    return wheel, target


def requirements(wheel) -> tuple[set[str], set[str]]:
    """(plain dependencies, extras) named in the wheel's METADATA."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(name).decode())
    plain = set()
    for item in meta.get_all("Requires-Dist") or []:
        if "extra ==" not in item:
            plain.add(item.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0]
                      .strip().lower())
    return plain, set(meta.get_all("Provides-Extra") or [])


def test_the_wheel_holds_one_package_and_the_runtime_only(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"cnn_ablation"}  # no top-level `storage` to collide with another's
    for path in ("cnn_ablation/storage/models.py", "cnn_ablation/storage/migrations/env.py",
                 "cnn_ablation/storage/migrations/versions/0001_initial.py",
                 "cnn_ablation/ui/dashboard.py", "cnn_ablation/ui/server.py",
                 "cnn_ablation/ui/new_run.py"):
        assert path in names, path
    assert "cnn-ablation = cnn_ablation.cli:main" in entry_points
    plain, extras = requirements(wheel)
    assert {"tensorflow", "keras", "streamlit", "sqlalchemy", "alembic"} <= plain
    assert not plain & DEV_TOOLS, plain & DEV_TOOLS
    assert {"postgres", "ray", "jax", "dev"} <= extras


def run_installed(target, *args, cwd, env=None, timeout=120):
    env = {**(env or os.environ), "PYTHONPATH": str(target)}
    return subprocess.run([sys.executable, str(target / "bin" / "cnn-ablation"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_installed_command_runs_from_anywhere_on_the_installed_copy(installed, tmp_path):
    _, target = installed
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABLATION_")}
    help_ = run_installed(target, "--help", cwd=tmp_path, env=env)
    assert help_.returncode == 0, help_.stderr
    assert help_.stdout.startswith("usage: cnn-ablation") and "dashboard" in help_.stdout
    where = subprocess.run([sys.executable, "-c", "import cnn_ablation.storage.migrate as m; "
                            "print(m.__file__)"], cwd=tmp_path, capture_output=True, text=True,
                           env={**env, "PYTHONPATH": str(target)}, timeout=120)
    assert where.stdout.startswith(str(target)), where  # not the repository's copy
    assert run_installed(target, "submit", "--dataset", "synthetic:100", cwd=tmp_path,
                         env=env).returncode == 0
    listed = run_installed(target, "runs", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "queued" in listed.stdout, listed
    assert (tmp_path / "ablation-data" / "ablation.db").is_file()  # ABLATION_HOME's default


@pytest.mark.slow
def test_the_installed_dashboard_serves_its_pages(installed, tmp_path):
    _, target = installed
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ABLATION_")},
           "PYTHONPATH": str(target), "ABLATION_START_WORKER": "0"}
    server = subprocess.Popen([sys.executable, str(target / "bin" / "cnn-ablation"), "dashboard",
                               "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def status(path: str) -> int:
        try:
            return urllib.request.urlopen(url + path, timeout=10).status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    try:
        wait_for(lambda: status("/_stcore/health") == 200 or server.poll() is not None,
                 timeout=120, what="the installed dashboard's health check")
        assert server.poll() is None, server.stdout.read()
        assert status("/") == 200 and status("/_stcore/metrics") == 404
    finally:
        server.kill()
        server.wait(timeout=30)
