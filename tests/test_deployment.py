"""The Docker files, checked where Docker cannot run: every variable a compose service sets is
one the project (or PostgreSQL) reads, every command a container runs parses as the real command
line parses it (and `--help` of each runs here for real), ports and addresses agree, the GPU is
reserved the compose way, and nothing starts before the database is healthy."""

import re
import shlex
import subprocess
import sys

import pytest
import yaml
from sqlalchemy.engine import make_url

from cnn_ablation.cli import build_parser
from cnn_ablation.settings import NAMES
from tests.support import ROOT

COMPOSE_FILES = ["docker-compose.yml", "docker-compose.ray.yml"]
POSTGRES_VARIABLES = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}  # the postgres image's
SECRETS = {"POSTGRES_PASSWORD", "ABLATION_PASSWORD", "RAY_AUTH_TOKEN"}  # the operator's
RAY_VARIABLES = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}  # read by Ray itself, on its services
STREAMLIT_PORT = 8501


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def substituted(text: str) -> str:
    """`${VAR:?message}` as compose fills it in, with a stand-in value."""
    return re.sub(r"\$\{(\w+)(?::?[-?][^}]*)?\}", lambda m: f"{m.group(1).lower()}-value", text)


def dockerfile_cmd(name: str) -> list[str]:
    line = [ln for ln in (ROOT / name).read_text().splitlines() if ln.startswith("CMD ")][-1]
    return yaml.safe_load(line.removeprefix("CMD "))  # the JSON (exec) form


def commands(service: dict) -> list[list[str]]:
    """Each program a service runs, as argv: its `command`, else its image's CMD; a `sh -c`
    script split into its `&&` parts (and `exec` dropped)."""
    command = service.get("command") or dockerfile_cmd(service["build"]["dockerfile"])
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] != ["sh", "-c"]:
        return [argv]
    parts = [shlex.split(part) for part in argv[2].split("&&")]
    return [p[1:] if p[0] == "exec" else p for p in parts]


def services(with_image_commands: bool = False):
    """(file, service name, service) of both files; only those built here when the commands
    matter (the postgres image's own command is not ours)."""
    for name in COMPOSE_FILES:
        for service_name, service in load(name)["services"].items():
            if "build" in service or not with_image_commands:
                yield name, service_name, service


def test_every_compose_file_is_yaml_with_services_that_build_from_files_here():
    for name in COMPOSE_FILES:
        compose = load(name)
        assert set(compose["services"]) >= {"db", "dashboard"}
        for service in compose["services"].values():
            if "build" in service:
                assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
            else:
                assert service["image"].startswith("postgres:")


RAY_SERVICES = {"ray-head", "ray-gpu", "scheduler"}


def test_ray_publishes_nothing_beyond_this_host_and_every_ray_process_needs_the_token():
    """Ray's dashboard (8265) carries a Jobs API that runs code; the cluster port lets a node
    join. Published on 127.0.0.1 only, and every Ray process runs with token authentication
    (the token required from the operator's environment)."""
    compose = load("docker-compose.ray.yml")["services"]
    for service_name in RAY_SERVICES:
        env = environment(compose[service_name])
        assert env["RAY_AUTH_MODE"] == "token", service_name
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), service_name
        for port in compose[service_name].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (service_name, port)
    assert compose["ray-head"]["ports"]  # published, on loopback


def test_every_variable_a_service_sets_is_one_the_project_or_postgres_reads():
    for name, service_name, service in services():
        for variable, value in environment(service).items():
            allowed = POSTGRES_VARIABLES if service_name == "db" else \
                set(NAMES) | RAY_VARIABLES if service_name in RAY_SERVICES else NAMES
            assert variable in allowed, f"{name}: {service_name} sets {variable}, read by no one"
            for used in re.findall(r"\$\{(\w+)", value):
                assert used in SECRETS, f"{name}: {service_name} uses ${{{used}}}"
                assert f"${{{used}:?" in value, f"{name}: ${{{used}}} must be required (:?)"


def test_the_dashboard_listens_beyond_loopback_only_with_a_password_and_no_worker_of_its_own():
    for name in COMPOSE_FILES:
        dashboard = load(name)["services"]["dashboard"]
        env = environment(dashboard)
        assert env["ABLATION_START_WORKER"] == "0"
        assert env["ABLATION_ADDRESS"] == "0.0.0.0" and env["ABLATION_PASSWORD"].startswith(
            "${ABLATION_PASSWORD:?")
        assert dashboard["ports"] == [f"{STREAMLIT_PORT}:{STREAMLIT_PORT}"]
        (cmd,) = commands(dashboard)  # the image's CMD: python -m cnn_ablation dashboard ...
        assert cmd[:4] == ["python", "-m", "cnn_ablation", "dashboard"]
        args = build_parser().parse_args(cmd[3:])
        assert args.port == STREAMLIT_PORT and args.address is None  # ABLATION_ADDRESS decides


def test_streamlit_knows_every_flag_the_dashboard_is_started_with():
    from cnn_ablation.cli import dashboard_command

    cmd = dashboard_command("0.0.0.0", STREAMLIT_PORT)
    assert (ROOT / cmd[4]).is_file()
    helptext = subprocess.run([sys.executable, "-m", "streamlit", "run", "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=True).stdout
    for flag in (part for part in cmd if part.startswith("--")):
        assert flag in helptext, f"streamlit run has no {flag}"


def test_every_database_url_points_at_the_db_service_as_postgres_creates_it():
    for name in COMPOSE_FILES:
        compose = load(name)
        db = environment(compose["services"]["db"])
        for service_name, service in compose["services"].items():
            url = environment(service).get("ABLATION_DATABASE_URL")
            if url is None:
                continue
            parsed = make_url(substituted(url))
            assert parsed.drivername == "postgresql+psycopg", (name, service_name)
            parsed.get_dialect().import_dbapi()  # the driver is installed (the postgres extra)
            assert (parsed.host, parsed.port) == ("db", 5432), (name, service_name)
            assert parsed.username == db["POSTGRES_USER"] and parsed.database == db["POSTGRES_DB"]
            assert parsed.password == substituted(db["POSTGRES_PASSWORD"])


def test_nothing_that_uses_the_database_starts_before_it_is_healthy():
    for name in COMPOSE_FILES:
        compose = load(name)
        assert "pg_isready" in " ".join(compose["services"]["db"]["healthcheck"]["test"])
        for service_name, service in compose["services"].items():
            if "ABLATION_DATABASE_URL" in environment(service):
                assert service["depends_on"]["db"]["condition"] == "service_healthy", \
                    (name, service_name)


def gpu_reservation(service: dict) -> dict:
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    return device


def test_the_worker_reserves_one_gpu_the_compose_way():
    worker = load("docker-compose.yml")["services"]["worker"]
    assert gpu_reservation(worker) == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert worker["build"]["dockerfile"] == "Dockerfile.gpu"
    ray_gpu = load("docker-compose.ray.yml")["services"]["ray-gpu"]
    assert gpu_reservation(ray_gpu) == {"driver": "nvidia", "count": "all",
                                        "capabilities": ["gpu"]}
    for _, service_name, service in services():
        assert "runtime" not in service, f"{service_name}: use deploy.resources, not runtime:"


def cnn_ablation_commands():
    for name, service_name, service in services(with_image_commands=True):
        for argv in commands(service):
            if argv[:3] == ["python", "-m", "cnn_ablation"]:
                yield f"{name}:{service_name}", argv[3:]


def test_every_cnn_ablation_command_a_container_runs_parses_and_its_flags_are_allowed(
        monkeypatch):
    from cnn_ablation.jobs.ray_executor import check_options
    from cnn_ablation.jobs.slots import make_slots

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # a fake GPU: the flags, not the machine
    found = dict(cnn_ablation_commands())
    assert {"docker-compose.yml:worker", "docker-compose.ray.yml:scheduler"} <= set(found)
    for where, args in [*found.items(), ("Dockerfile.gpu", dockerfile_cmd("Dockerfile.gpu")[3:])]:
        parsed = build_parser().parse_args(args)  # exits (SystemExit) on anything it refuses
        if parsed.command == "dashboard":
            continue  # checked above
        assert parsed.command == "worker", where
        if parsed.executor == "ray":
            check_options(parsed.gpus, parsed.runs_per_gpu, parsed.gpu_memory_mb, parsed.slots,
                          parsed.ray_address)
        else:
            assert parsed.ray_address is None and parsed.slots is None
            assert make_slots(parsed.gpus, parsed.runs_per_gpu, parsed.gpu_memory_mb)


@pytest.mark.parametrize("subcommand", ["worker"])
def test_the_commands_the_containers_run_answer_help_for_real(subcommand):
    result = subprocess.run([sys.executable, "-m", "cnn_ablation", subcommand, "--help"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for flag in ("--executor", "--ray-address", "--runs-per-gpu", "--gpus", "--slots"):
        assert flag in result.stdout


def ray_commands():
    for _, service_name, service in services(with_image_commands=True):
        for argv in commands(service):
            if argv[0] == "ray":
                yield service_name, argv
        health = (service.get("healthcheck") or {}).get("test", [])
        if health[:2] == ["CMD", "ray"]:
            yield service_name, health[1:]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic, inside ray
def test_every_ray_command_parses_as_ray_parses_it_and_the_addresses_meet_the_head():
    from ray.scripts import scripts

    found = list(ray_commands())
    assert {name for name, _ in found} == {"ray-head", "ray-gpu", "scheduler"}
    compose = load("docker-compose.ray.yml")["services"]
    (head,) = commands(compose["ray-head"])
    head_options = scripts.start.make_context("ray start", head[2:]).params
    assert head_options["head"] and head_options["block"]
    assert (head_options["num_cpus"], head_options["num_gpus"]) == (0, 0)  # bookkeeping only
    published = {p.split(":")[1] for p in compose["ray-head"]["ports"]}
    assert published == {str(head_options["port"]), str(head_options["dashboard_port"])}
    for service_name, argv in found:
        command = getattr(scripts, argv[1])  # start | status: click commands
        options = command.make_context(f"ray {argv[1]}", argv[2:]).params  # refuses bad flags
        if options.get("address"):
            assert options["address"] == f"ray-head:{head_options['port']}", service_name
    scheduler = commands(compose["scheduler"])
    assert scheduler[0][:2] == ["ray", "start"]  # a driver must run on a Ray node
    worker = build_parser().parse_args(scheduler[1][3:])
    assert (worker.executor, worker.ray_address) == ("ray", "auto")
    assert compose["scheduler"]["depends_on"]["ray-head"]["condition"] == "service_healthy"


def pins() -> dict[str, str]:
    return dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))


def test_the_gpu_image_installs_the_pinned_tensorflow_with_its_cuda_extra():
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert f'"tensorflow[and-cuda]=={pins()["tensorflow"]}"' in text
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)  # as ./Dockerfile: same Python
    cuda = re.findall(r"(nvidia-[\w-]+)==([\d.]+)", text)
    assert len(cuda) == 12 and len({name for name, _ in cuda}) == 12


@pytest.mark.parametrize("name,extras", [("Dockerfile", {"psycopg"}),
                                         ("Dockerfile.gpu", {"psycopg", "ray"})])
def test_the_images_install_the_pinned_runtime_and_no_test_tools(name, extras, tmp_path):
    """Each image installs pyproject's dependencies (and the extras it needs) under
    constraints.txt, then the package without dependencies: what its pip command would be asked
    for is computed here by the image's own expression."""
    from packaging.requirements import Requirement

    text = (ROOT / name).read_text()
    steps = [ln for ln in text.replace("\\\n", " ").splitlines() if ln.startswith("RUN ")]
    installs = [part.strip() for ln in steps for part in ln[4:].split("&&")
                if "pip install" in part]
    assert all("-c constraints.txt" in ln or "--no-deps ." in ln for ln in installs), installs
    assert any(ln.startswith("pip install --no-cache-dir --no-deps .") for ln in installs)
    # the step that writes the requirements file, run here by a shell as the image's would
    (write,) = [part.strip() for ln in steps for part in ln[4:].split("&&")
                if "> /tmp/requirements.txt" in part]
    out = tmp_path / "requirements.txt"
    subprocess.run(["sh", "-c", write.replace("/tmp/requirements.txt", str(out))
                    .replace("python -c", f"{sys.executable} -c", 1)], cwd=ROOT, check=True)
    lines = [ln for ln in out.read_text().splitlines() if ln.strip()]
    names = {Requirement(ln).name.lower() for ln in lines}  # each line a valid requirement
    assert {"tensorflow", "keras", "streamlit", "sqlalchemy"} | extras <= names
    assert not names & {"pytest", "ruff", "mypy", "playwright", "pyyaml", "jax"}, names
    assert not {n for n in names if n not in {p.lower() for p in pins()}}  # all pinned


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_the_images_run_as_a_user_of_their_own_who_owns_only_data(name):
    lines = (ROOT / name).read_text().splitlines()
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    user = users[-1]
    made = [ln for ln in lines if ln.startswith("RUN useradd")]
    assert made and f" {user} " in made[0] + " " and f"chown {user} /data" in made[0]
    at = lines.index(f"USER {user}")
    assert all(not ln.startswith(("RUN pip", "COPY")) for ln in lines[at:])  # code stays root's
    assert lines[at + 1:].count("VOLUME /data") == 1  # after the chown: a new volume is its
