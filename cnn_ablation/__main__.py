"""The command line (DESIGN.md): summary, train, submit, worker, runs, show, cancel, retry, delete,
study. Bad input exits 2 with a message naming the field and the allowed values, and writes
nothing. TensorFlow is imported only by the commands that build or train a model."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any TensorFlow import

from sqlalchemy.exc import SQLAlchemyError  # noqa: E402

from cnn_ablation.config import ConfigError, RunConfig, parse_bn  # noqa: E402
from cnn_ablation.report import print_run, print_runs, run_dict  # noqa: E402


def _config_flags(p: argparse.ArgumentParser, with_seeds: bool = False) -> None:
    d = RunConfig()
    p.add_argument("--preset", choices=["seed", "conv_basics"], default="seed")
    p.add_argument("--dataset", default=None,
                   help="cifar10 | cifar100 | mnist | fashion_mnist | synthetic[:N] | "
                        "folder:PATH (default: cifar10 for training; summary uses the "
                        "chapter's input shape)")
    p.add_argument("--bn", default=None, help="BatchNorm per position as 0/1, e.g. 1,0,0,0,1 "
                                              "(conv_1..conv_4, dense_1); default all on")
    p.add_argument("--dropout", type=float, default=d.dropout, help="in [0, 1)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.learning_rate, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--val-split", type=float, default=d.val_split)
    p.add_argument("--limit-train", type=int, default=None, help="use the first N train images")
    p.add_argument("--image-size", default=None, help="HxW for folder: datasets, e.g. 64x64")
    p.add_argument("--name", default="", help="a name to find the run by")
    if with_seeds:
        p.add_argument("--seeds", type=int, default=1,
                       help="queue N repeats with seeds 0..N-1 (default 1: just --seed)")


def config_from_args(args: argparse.Namespace, default_dataset: str = "cifar10") -> RunConfig:
    size = None
    if args.image_size:
        try:
            size = tuple(int(v) for v in args.image_size.lower().split("x"))
        except ValueError:
            raise ConfigError("image_size", args.image_size, "HxW, e.g. 64x64") from None
    return RunConfig(
        preset=args.preset, dataset=args.dataset or default_dataset,
        bn=None if args.bn is None else parse_bn(args.bn, args.preset),
        dropout=args.dropout, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, seed=args.seed, val_split=args.val_split,
        limit_train=args.limit_train, image_size=size,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cnn_ablation",
                                     description="Ablation studies of the chapter's CNN.")
    sub = parser.add_subparsers(dest="command", required=True)
    _config_flags(sub.add_parser("summary", help="Keras summary of the model + total params"))
    _config_flags(sub.add_parser("train", help="one run in the foreground, recorded in the DB"))
    _config_flags(sub.add_parser("submit", help="queue run(s); prints the ids"), with_seeds=True)
    p = sub.add_parser("worker", help="claim and train queued runs in the background")
    p.add_argument("--gpus", default="all", help="all | none | 0,1 (one slot per GPU)")
    p.add_argument("--once", action="store_true", help="drain the queue, then exit")
    p.add_argument("--worker-id", default=None, help=argparse.SUPPRESS)
    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--status", default=None, help="only runs with this status")
    for name, text in (("show", "config, status, every epoch, test metrics"),
                       ("cancel", "cancel a queued or running run"),
                       ("retry", "queue a new run with the same config"),
                       ("delete", "delete a run and its epochs")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_id", type=int)
        if name == "show":
            p.add_argument("--json", action="store_true")
    study = sub.add_parser("study", help="queue / show an ablation study").add_subparsers(
        dest="study_command", required=True)
    p = study.add_parser("create", help="queue a study: a preset, or factors and a design")
    _config_flags(p)
    p.add_argument("--study-preset", choices=["chapter", "bn_one_at_a_time", "dropout_sweep"],
                   default=None, help="one of the ready-made studies")
    p.add_argument("--factor", action="append", default=[],
                   help="bn_conv_3 (on/off), or dropout=0,0.25,0.5, learning_rate=..., "
                        "batch_size=...; repeat for several factors")
    p.add_argument("--design", choices=["full", "ofat"], default="full",
                   help="full factorial, or one factor at a time against the base")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell (0..N-1)")
    study.add_parser("list", help="all studies with their progress")
    for name, text in (("show", "grid, per-cell summary and effects"),
                       ("fill", "queue cells/seeds never run"),
                       ("rerun-failed", "queue again cells/seeds whose runs all failed"),
                       ("export", "per-run and per-cell CSV files")):
        p = study.add_parser(name, help=text)
        p.add_argument("study_id", type=int)
        if name == "show":
            p.add_argument("--json", action="store_true")
        if name in ("show", "export"):
            p.add_argument("--metric", default="final_val_accuracy",
                           choices=["final_val_accuracy", "best_val_accuracy", "test_accuracy"])
        if name == "export":
            p.add_argument("--out", default=".", help="folder for the two CSV files")
    p = sub.add_parser("execute", help=argparse.SUPPRESS)  # a worker's child process
    p.add_argument("run_id", type=int)
    p.add_argument("--parent-pid", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except LookupError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        from storage import database_url

        print(f"error: database: cannot use {database_url()}: {exc.__class__.__name__}: "
              f"{str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


def _quiet_keras_import() -> None:
    """TensorFlow prints start-up lines on stderr before its log level applies; hide just those."""
    if "keras" in sys.modules:
        return
    from cnn_ablation.worker import detect_gpus

    if not detect_gpus():  # CPU-only: skip TensorFlow's failing CUDA probe and its error line
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # its only remaining line is the CUDA probe
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def _engine():
    from storage import get_engine

    return get_engine()


def cmd_summary(args) -> int:
    from cnn_ablation.datasets import dataset_info

    config = config_from_args(args, default_dataset="synthetic")
    if args.dataset:
        info = dataset_info(config.dataset, config.image_size)
        shape, classes = info.shape, info.num_classes
    else:
        from cnn_ablation.architecture import PRESETS

        shape, classes = PRESETS[config.preset].input_shape, 10
    _quiet_keras_import()
    from cnn_ablation.model import build_model

    model = build_model(config, shape, classes)
    print(f"Model {config.preset!r}: {config.label}, input {shape[0]}x{shape[1]}x{shape[2]}, "
          f"{classes} classes")
    print(f"{'layer':<16}{'type':<20}{'output shape':<22}{'params':>10}")
    print("-" * 68)
    for layer in model.layers:
        out = "(None, " + ", ".join(str(d) for d in layer.output.shape[1:]) + ")"
        print(f"{layer.name:<16}{type(layer).__name__:<20}{out:<22}{layer.count_params():>10,}")
    print("-" * 68)
    trainable = sum(int(v.numpy().size) for v in model.trainable_weights)
    print(f"Total params: {model.count_params():,}  (trainable {trainable:,}, "
          f"non-trainable {model.count_params() - trainable:,})")
    return 0


def cmd_train(args) -> int:
    from cnn_ablation.launch import new_run
    from storage import queries

    config = config_from_args(args)
    engine = _engine()
    new = new_run(config, name=args.name)  # validates before anything is written
    run_id = queries.create_runs(engine, [new], status="running")[0]
    queries.mark_running(engine, run_id, worker_id="foreground", host=socket.gethostname(),
                         device=_foreground_device(), started_at=time.time())
    print(f"run {run_id}: {new.label} on {new.dataset}, {new.epochs} epochs, "
          f"{new.params:,} params", flush=True)
    _quiet_keras_import()
    from cnn_ablation.training import execute

    status = execute(engine, run_id, echo=lambda line: print(line, flush=True))
    run = queries.find_run_or_raise(engine, run_id)
    tail = f"test_acc {run.test_accuracy:.4f}  test_loss {run.test_loss:.4f}" \
        if run.test_accuracy is not None else (run.error or "")
    print(f"run {run_id}: {status}  {tail}")
    return 0 if status == "completed" else 1


def _foreground_device() -> str:
    from cnn_ablation.worker import detect_gpus

    return "gpu:0" if detect_gpus() else "cpu"


def cmd_submit(args) -> int:
    from cnn_ablation.launch import submit, with_seeds

    config = config_from_args(args)
    configs = with_seeds(config, args.seeds)
    ids = submit(_engine(), configs, name=args.name)
    for run_id in ids:
        print(run_id)
    return 0


def cmd_worker(args) -> int:
    from cnn_ablation.worker import Worker, make_slots

    try:
        slots = make_slots(args.gpus)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    Worker(_engine(), slots, once=args.once, worker_id=args.worker_id).run()
    return 0


def cmd_runs(args) -> int:
    from storage import queries

    engine = _engine()
    queries.reap_stale_runs(engine)
    frame = queries.runs_frame(engine, statuses=[args.status] if args.status else None)
    if args.json:
        print(json.dumps([run_dict(row) for row in frame.to_dict("records")], indent=1))
    else:
        print_runs(frame)
    return 0


def cmd_show(args) -> int:
    from storage import queries

    engine = _engine()
    queries.reap_stale_runs(engine)
    run = queries.find_run_or_raise(engine, args.run_id)
    epochs = queries.epochs_frame(engine, [run.id])
    print_run(run, epochs, as_json=args.json)
    return 0


def cmd_cancel(args) -> int:
    from storage import queries

    status = queries.request_cancel(_engine(), args.run_id)
    word = {"cancelled": "cancelled (it had not started)",
            "running": "cancel requested; it stops within a few seconds"}
    print(f"run {args.run_id}: {word.get(status, f'already {status}; nothing to cancel')}")
    return 0


def cmd_retry(args) -> int:
    from cnn_ablation.launch import retry

    print(retry(_engine(), args.run_id))
    return 0


def cmd_delete(args) -> int:
    from storage import queries

    try:
        queries.delete_run(_engine(), args.run_id)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"run {args.run_id}: deleted")
    return 0


def cmd_execute(args) -> int:
    _quiet_keras_import()
    from cnn_ablation.training import execute

    status = execute(_engine(), args.run_id, echo=lambda line: print(line, flush=True),
                     parent_pid=args.parent_pid)
    print(f"run {args.run_id}: {status}", flush=True)
    return 0


def parse_factor(text: str) -> tuple[str, tuple]:
    """`bn_conv_3` -> on/off; `dropout=0,0.25` -> levels (numbers)."""
    from cnn_ablation.config import ConfigError

    name, _, values = text.partition("=")
    if not values:
        return name, (True, False)
    try:
        levels = tuple(int(v) if name == "batch_size" else float(v) for v in values.split(","))
    except ValueError:
        raise ConfigError("factor", text, f"{name}=v1,v2,... with numbers") from None
    return name, levels


def cmd_study(args) -> int:
    from cnn_ablation import studies
    from cnn_ablation.config import StudySpec, study_preset
    from storage import queries

    engine = _engine()
    if args.study_command == "create":
        base = config_from_args(args)
        if args.study_preset:
            spec = study_preset(args.study_preset, base, args.seeds)
        else:
            spec = StudySpec(base, dict(parse_factor(f) for f in args.factor), args.design,
                             args.seeds)
        study_id, queued = studies.create(engine, spec, args.name or args.study_preset or "study")
        print(f"study {study_id}: {len(spec.cells())} cells x {spec.seeds} seeds; queued "
              f"{len(queued)} runs" + (f" ({queued[0]}..{queued[-1]})" if queued else ""))
        seconds, basis = studies.estimate_seconds(engine, spec)
        print(f"estimate: {seconds / 60:.1f} min ({basis})" if seconds else f"estimate: {basis}")
        return 0
    if args.study_command == "list":
        for study in queries.list_studies(engine):
            view = studies.load(engine, study.id)
            grid = studies.grid(engine, view)
            print(f"{study.id:4d}  {study.name:30s} {len(grid)} cells x {view.spec.seeds} seeds, "
                  f"{int(grid['done'].sum())}/{len(grid) * view.spec.seeds} done")
        return 0
    view = studies.load(engine, args.study_id)
    if args.study_command in ("fill", "rerun-failed"):
        action = studies.fill_missing if args.study_command == "fill" else studies.rerun_failed
        queued = action(engine, view.id)
        print(f"study {view.id}: queued {len(queued)} runs {queued}")
        return 0
    result = studies.results(engine, view, args.metric)
    if args.study_command == "export":
        from pathlib import Path

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result["runs"].to_csv(out / f"study-{view.id}-runs.csv", index=False)
        result["summary"].to_csv(out / f"study-{view.id}-cells.csv", index=False)
        print(f"wrote {out / f'study-{view.id}-runs.csv'} and {out / f'study-{view.id}-cells.csv'}")
        return 0
    grid = studies.grid(engine, view)
    if args.json:
        print(json.dumps({"id": view.id, "name": view.name, "spec": view.spec.to_dict(),
                          "grid": grid.to_dict("records"),
                          "summary": json.loads(result["summary"].to_json(orient="records")),
                          "effects": json.loads(result["effects"].to_json(orient="records")),
                          "words": result["words"]}, indent=1))
        return 0
    print(f"study {view.id}: {view.name}\n")
    print(grid.to_string(index=False))
    from cnn_ablation.analysis import readable_effects, readable_summary

    print("\n" + readable_summary(result["summary"]).to_string(index=False))
    print(f"\neffects on {args.metric}:")
    print(readable_effects(result["effects"]).to_string(index=False))
    print("\n" + result["words"].replace("**", ""))
    return 0


COMMANDS = {
    "summary": cmd_summary, "train": cmd_train, "submit": cmd_submit, "worker": cmd_worker,
    "runs": cmd_runs, "show": cmd_show, "cancel": cmd_cancel, "retry": cmd_retry,
    "delete": cmd_delete, "execute": cmd_execute, "study": cmd_study,
}

if __name__ == "__main__":
    sys.exit(main())
