"""The command line (docs/user-guide.md, "Command line"): summary, train, submit, worker, runs,
show, cancel, retry, delete, study. One function per command (`cmd_*`), chosen by argparse. Bad
input exits 2 with a message naming the field and the allowed values, and writes nothing.

May import: everything beneath it; TensorFlow only in the commands that build or train a model
(and only inside them), so `runs`, `show` and `cancel` start without it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from cnn_ablation.cli.common import config_flags
from cnn_ablation.cli.run_commands import (
    RUNS_LIMIT,
    cmd_cancel,
    cmd_delete,
    cmd_execute,
    cmd_gc,
    cmd_label,
    cmd_retry,
    cmd_runs,
    cmd_show,
    cmd_submit,
    cmd_summary,
    cmd_train,
    cmd_worker,
    cmd_workers,
)
from cnn_ablation.cli.study_commands import (
    cmd_study_create,
    cmd_study_export,
    cmd_study_fill,
    cmd_study_list,
    cmd_study_show,
)
from cnn_ablation.config import METRICS, ConfigError
from cnn_ablation.settings import SettingsError, database_error
from cnn_ablation.storage.records import NotFound
from cnn_ablation.storage.status import RunStatus
from cnn_ablation.studies.presets import STUDY_PRESETS

Command = Callable[[argparse.Namespace], int]
MAX_ID = 2**63 - 1  # ids are 64-bit signed integers in every database we support


def record_id(text: str) -> int:
    """A run or study id as typed: a whole number from 1 to MAX_ID (argparse names the argument
    and exits 2 otherwise)."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 19) \
            or not 1 <= int(digits) <= MAX_ID:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: a whole number "
                                         f"from 1 to {MAX_ID}")
    return int(digits)


def port_number(text: str) -> int:
    if not (text.strip().isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: 1-65535")
    return int(text)


# What `cnn-ablation dashboard` passes to `streamlit run` beside the address and port (the same
# values as the repository's .streamlit/config.toml, which an installed package lacks).
DASHBOARD_OPTIONS = ("--server.headless", "true", "--browser.gatherUsageStats", "false",
                     "--server.maxUploadSize", "50", "--client.showErrorDetails", "none",
                     "--client.toolbarMode", "minimal")


def dashboard_command(address: str, port: int) -> list[str]:
    """`streamlit run` on the packaged server (cnn_ablation/ui/server.py: the pages with
    Streamlit's metrics closed and uploads refused before the password)."""
    from pathlib import Path

    server = Path(__file__).resolve().parents[1] / "ui" / "server.py"  # a path, not an import
    return [sys.executable, "-m", "streamlit", "run", str(server), "--server.address", address,
            "--server.port", str(port), *DASHBOARD_OPTIONS]


def listen_address(given: str | None) -> str:
    """--address, else ABLATION_ADDRESS, else 127.0.0.1 (this machine only)."""
    return (given or "").strip() or os.environ.get("ABLATION_ADDRESS", "").strip() or "127.0.0.1"


def cmd_dashboard(args: argparse.Namespace) -> int:
    address = listen_address(args.address)
    shown = "localhost" if address in ("0.0.0.0", "::", "127.0.0.1") else address
    print(f"cnn-ablation: open http://{shown}:{args.port}", flush=True)
    command = dashboard_command(address, args.port)
    os.execv(command[0], command)
    return 0  # not reached


HIDDEN: set[str] = set()  # commands for the worker's own use, not listed in --help


def _command(sub: argparse._SubParsersAction, name: str, func: Command | None, text: str | None,
             run_id: bool = False, as_json: bool = False) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=text if text else argparse.SUPPRESS)
    if not text:  # hidden (a worker's child process): in neither the list nor the usage line
        sub._choices_actions = [a for a in sub._choices_actions if a.dest != name]
        HIDDEN.add(name)
    if func is not None:
        p.set_defaults(func=func)
    if run_id:
        p.add_argument("run_id", type=record_id)
    if as_json:
        p.add_argument("--json", action="store_true")
    return p


def build_parser() -> argparse.ArgumentParser:
    invoked = os.path.basename(sys.argv[0]) if sys.argv else ""
    parser = argparse.ArgumentParser(prog="cnn-ablation" if invoked == "cnn-ablation"
                                     else "python -m cnn_ablation",
                                     description="Ablation studies of the chapter's CNN.")
    sub = parser.add_subparsers(dest="command", required=True)
    config_flags(_command(sub, "summary", cmd_summary, "Keras summary of the model + total params"))
    config_flags(_command(sub, "train", cmd_train, "one run in the foreground, recorded in the DB"))
    config_flags(_command(sub, "submit", cmd_submit, "queue run(s); prints the ids"),
                  with_seeds=True)
    p = _command(sub, "worker", cmd_worker, "claim and train queued runs in the background")
    p.add_argument("--gpus", default="all", help="all | none | 0,1 (one slot per GPU)")
    p.add_argument("--once", action="store_true", help="drain the queue, then exit")
    p.add_argument("--runs-per-gpu", type=int, default=1, metavar="K",
                   help="K runs share each GPU (each with memory growth and 1/K of its memory); "
                        "with no GPU, K runs share the CPU")
    p.add_argument("--gpu-memory-mb", type=int, default=None, metavar="MB",
                   help="each run's GPU memory limit (default with K > 1: the GPU's memory / K)")
    p.add_argument("--backend", choices=["tensorflow", "jax", "torch"], default=None,
                   help="the Keras backend its runs train on, stored on each run (default: "
                        "KERAS_BACKEND, else tensorflow); jax: pip install 'cnn-ablation[jax]'")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: training processes on this host (default); ray: each run is a "
                        "Ray task on whichever node of a Ray cluster has room")
    p.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                   help="with --executor ray: the cluster's head (auto: the cluster started with "
                        "`ray start` on this host; default: that one if there is one, else a Ray "
                        "instance of this worker's own)")
    p.add_argument("--slots", type=int, default=None, metavar="N",
                   help="with --executor ray: runs in flight at once (default: the cluster's "
                        "GPUs x K, or its CPUs)")
    p.add_argument("--worker-id", default=None, help=argparse.SUPPRESS)
    p = _command(sub, "workers", cmd_workers, "list the live workers and their runs; --stop "
                 "asks one to stop (its runs go back to the queue)", as_json=True)
    p.add_argument("--stop", default=None, metavar="ID|all",
                   help="SIGTERM a worker of this machine (all: every one); each of its runs "
                        "checkpoints and is queued again")
    p = _command(sub, "runs", cmd_runs, "list runs", as_json=True)
    p.add_argument("--status", default=None, choices=[s.value for s in RunStatus],
                   help="only runs with this status")
    p.add_argument("--tag", action="append", default=None, metavar="TAG",
                   help="only runs with this tag (repeat: runs with every one of them)")
    how_many = p.add_mutually_exclusive_group()
    how_many.add_argument("--limit", type=int, default=RUNS_LIMIT, metavar="N",
                          help=f"only the newest N runs (default {RUNS_LIMIT:,}), oldest first")
    how_many.add_argument("--all", action="store_true", help="every run, however many")
    _command(sub, "show", cmd_show, "config, status, every epoch, test metrics", run_id=True,
             as_json=True)
    p = _command(sub, "cancel", cmd_cancel, "cancel a queued or running run (a running one "
                 "stops after its current epoch)", run_id=True)
    p.add_argument("--now", action="store_true",
                   help="stop a running run at once; its partial epoch is not kept")
    _command(sub, "retry", cmd_retry, "queue a new run with the same config", run_id=True)
    _command(sub, "delete", cmd_delete, "delete a run, its epochs and its files (log, "
             "checkpoint, TensorBoard folder)", run_id=True)
    p = _command(sub, "label", cmd_label, "rename a run, tag or untag it, set its comment",
                 run_id=True)
    p.add_argument("--name", default=None, help="the run's new name (up to 200 characters)")
    p.add_argument("--tag", action="extend", nargs="+", default=None, metavar="TAG",
                   help="add tags (1-32 of a-z 0-9 _ . : -, stored lower-case; 20 at most)")
    p.add_argument("--untag", action="extend", nargs="+", default=None, metavar="TAG",
                   help="remove tags")
    p.add_argument("--comment", default=None,
                   help="the run's note (plain text, up to 2,000 characters; '' clears it)")
    p = _command(sub, "gc", cmd_gc, "remove what nothing needs any more (files of deleted "
                 "runs, checkpoints that will not resume, old workers' logs and rows, unused "
                 "network files), printing each")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p = _command(sub, "dashboard", cmd_dashboard, "serve the dashboard (Streamlit) on this "
                 "machine; a worker is started with it unless ABLATION_START_WORKER=0")
    p.add_argument("--address", default=None, metavar="ADDRESS",
                   help="where to listen (default: ABLATION_ADDRESS, else 127.0.0.1; beyond "
                        "loopback the pages show nothing without ABLATION_PASSWORD)")
    p.add_argument("--port", type=port_number, default=8501, help="default 8501")
    p = _command(sub, "execute", cmd_execute, None, run_id=True)  # a worker's child process
    p.add_argument("--parent-pid", type=int, default=None)
    _study_parser(_command(sub, "study", None, "queue / show an ablation study"))
    sub.metavar = "{" + ",".join(c for c in sub.choices if c not in HIDDEN) + "}"
    return parser


def _study_parser(study: argparse.ArgumentParser) -> None:
    from cnn_ablation.cli.study_commands import (
        cmd_study_cancel,
        cmd_study_delete,
        cmd_study_report,
        power_pp,
    )

    sub = study.add_subparsers(dest="study_command", required=True)
    p = _command(sub, "create", cmd_study_create,
                 "queue a study: a preset, or factors and a design")
    config_flags(p)
    p.add_argument("--study-preset", choices=list(STUDY_PRESETS), default=None,
                   help="one of the ready-made studies")
    p.add_argument("--factor", action="append", default=[],
                   help="bn_conv_3 (on/off), or dropout=0,0.25,0.5, learning_rate=..., "
                        "batch_size=...; with --network: bn:LAYER (on/off), "
                        "dropout:LAYER=0.1,0.3; repeat for several factors")
    p.add_argument("--design", choices=["full", "ofat"], default="full",
                   help="full factorial, or one factor at a time against the base")
    p.add_argument("--seeds", type=int, default=3,
                   help="seeds per cell (0..N-1); with --target-pp the first round's")
    p.add_argument("--target-pp", type=float, default=None,
                   help="adaptive seeds: the first round's spread plans the seeds that bring "
                        "every difference's 95 %% interval under +-this many percentage points "
                        "(Stein's two-stage rule)")
    p.add_argument("--max-seeds", type=int, default=None,
                   help="adaptive seeds: stop at this many seeds per cell at the latest")
    p.add_argument("--seed-step", type=int, default=None,
                   help="adaptive seeds: seeds added per cell each round (default 2)")
    p.add_argument("--metric", default=None, choices=list(METRICS),
                   help="the primary metric, fixed now: verdicts are for it, others are "
                        "exploratory (default final_val_accuracy; test_accuracy with "
                        "--val-split 0)")
    p.add_argument("--smallest-pp", type=power_pp, default=1.0,
                   help="the smallest change that matters, in percentage points: an interval "
                        "holding zero but reaching past it is inconclusive (default 1)")
    _command(sub, "list", cmd_study_list, "all studies with their progress")
    for name, func, text in (("show", cmd_study_show, "grid, per-cell summary and effects"),
                             ("fill", cmd_study_fill, "queue cells/seeds never run"),
                             ("rerun-failed", cmd_study_fill,
                              "queue again cells/seeds whose runs all failed"),
                             ("export", cmd_study_export, "per-run and per-cell CSV files"),
                             ("report", cmd_study_report, "tables (Markdown, LaTeX), forest "
                              "plot (PNG, SVG) and verdict"),
                             ("cancel", cmd_study_cancel, "cancel the study's queued runs and "
                              "stop its running ones (after their current epoch)"),
                             ("delete", cmd_study_delete, "delete the study (its runs are kept "
                              "unless --with-runs)")):
        p = _command(sub, name, func, text, as_json=name == "show")
        p.add_argument("study_id", type=record_id)
        if name in ("show", "export", "report"):
            p.add_argument("--metric", default=None, choices=list(METRICS),
                           help="default: the study's primary metric; another is exploratory")
        if name in ("show", "report"):
            p.add_argument("--power-pp", type=power_pp, default=None,
                           help="seeds needed to detect a change of this many percentage "
                                "points with 80 %% power (default: the study's smallest change "
                                "that matters)")
        if name in ("export", "report"):
            p.add_argument("--out", default=".", help="folder for the files")
        if name == "cancel":
            p.add_argument("--now", action="store_true",
                           help="stop running runs at once; their partial epochs are not kept")
        if name == "delete":
            p.add_argument("--with-runs", action="store_true",
                           help="also delete the runs the study queued (none may be running)")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # the parser's defaults read the settings too
        return args.func(args)
    except (ConfigError, SettingsError, NotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"error: {database_error(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        # Python would flush stdout again at exit and print a second error: point it at nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a process ended by SIGPIPE
    except Exception as exc:
        if not _dataset_unavailable(exc):
            raise
        print(f"error: dataset: {exc}", file=sys.stderr)  # commands name the dataset
        return 2  # themselves; this is the net


def _dataset_unavailable(exc: BaseException) -> bool:
    """Whether `exc` is a `DatasetUnavailable` (data.arrays). It can be one only if a command loaded
    that module, so the module is not imported to ask: commands that read no dataset (runs,
    show, cancel) start without NumPy."""
    datasets = sys.modules.get("cnn_ablation.data.arrays")
    return datasets is not None and isinstance(exc, datasets.DatasetUnavailable)


