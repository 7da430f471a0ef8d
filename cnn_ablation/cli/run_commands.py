"""Commands about single runs: summary, train, submit, worker, runs, show, cancel, retry, delete,
and `execute` (a worker's child process)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from cnn_ablation.architecture import PRESETS
from cnn_ablation.cli.common import (
    config_from_args,
    open_engine,
    open_existing_engine,
    quiet_keras_import,
)
from cnn_ablation.settings import settings

RUNS_LIMIT = 1000  # runs `runs` lists unless --limit or --all say otherwise: the newest


# --- commands -------------------------------------------------------------------------------------
def cmd_summary(args: argparse.Namespace) -> int:
    from cnn_ablation.config import ConfigError
    from cnn_ablation.data.arrays import DatasetUnavailable
    from cnn_ablation.data.datasets import dataset_info

    config = config_from_args(args, default_dataset="synthetic")
    if args.dataset:
        try:
            info = dataset_info(config.dataset, config.image_size)
        except DatasetUnavailable as exc:  # worded as launch.prepare words it
            raise ConfigError("dataset", config.dataset,
                              f"a dataset that exists here ({exc})") from exc
        shape, classes = info.shape, info.num_classes
    elif config.network is not None:
        shape, classes = (32, 32, 3), 10  # synthetic's; name --dataset for another
    else:
        shape, classes = PRESETS[config.preset].input_shape, 10
    quiet_keras_import()
    if config.network is not None:
        from cnn_ablation.networks.surgery import build_custom

        model = build_custom(config, shape, classes)
    else:
        from cnn_ablation.networks.model import build_model

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


def cmd_train(args: argparse.Namespace) -> int:
    from cnn_ablation.jobs.launch import new_run
    from cnn_ablation.jobs.slots import detect_gpus, worker_backend
    from cnn_ablation.storage import lifecycle, runs

    config = config_from_args(args)
    new = new_run(config, name=args.name)  # validates before anything is written
    try:
        backend = worker_backend(None)  # KERAS_BACKEND, else tensorflow
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine = open_engine()
    host = socket.gethostname()
    run_id = lifecycle.start_foreground(engine, new, f"foreground-{host}-{os.getpid()}", host,
                                        "gpu:0" if detect_gpus() else "cpu",
                                        settings().heartbeat_s, backend=backend)
    try:  # from here on a Ctrl-C (even inside this print) must not leave the run `running`
        print(f"run {run_id}: {new.label} on {new.dataset}, {new.epochs} epochs, "
              f"{new.params or 0:,} params", flush=True)
        quiet_keras_import()
        from cnn_ablation.training.run import execute

        status = execute(engine, run_id, echo=lambda line: print(line, flush=True),
                         own_worker=True)
    except BaseException:  # Ctrl-C, even while TensorFlow loads: the run must not stay running
        lifecycle.finish(engine, run_id, "cancelled", error="interrupted (Ctrl-C)")  # if still so
        raise
    run = runs.find_run_or_raise(engine, run_id)
    tail = f"test_acc {run.test_accuracy:.4f}  test_loss {run.test_loss:.4f}" \
        if run.test_accuracy is not None and run.test_loss is not None else (run.error or "")
    print(f"run {run_id}: {status}  {tail}")
    return 0 if status == "completed" else 1


def cmd_submit(args: argparse.Namespace) -> int:
    from cnn_ablation.jobs.launch import new_run, with_seeds
    from cnn_ablation.storage import runs

    configs = with_seeds(config_from_args(args), args.seeds)
    # launch.submit's two steps, split so that every config is checked before the database is
    # opened (and perhaps made): a refused submit writes nothing.
    new_runs = [new_run(c, name=args.name) for c in configs]
    for run_id in runs.create_runs(open_engine(), new_runs):
        print(run_id)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from cnn_ablation import log
    from cnn_ablation.jobs.slots import make_slots, worker_backend
    from cnn_ablation.jobs.worker import Worker
    from cnn_ablation.studies.rounds import advance  # adaptive studies' next round, after each run

    try:
        backend = worker_backend(args.backend)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.executor == "ray":  # the same worker, each run a Ray task (Ray is imported only then)
        from cnn_ablation.jobs.ray_executor import RayUnavailable, RayWorker, check_options

        try:  # what was typed, then the database, then Ray: each refused before the next
            check_options(args.gpus, args.runs_per_gpu, args.gpu_memory_mb, args.slots,
                          args.ray_address)
            engine = open_engine()
            log.setup("worker")
            worker: Worker = RayWorker(engine, args.ray_address, args.runs_per_gpu,
                                       args.gpu_memory_mb, args.slots, args.gpus,
                                       once=args.once, worker_id=args.worker_id,
                                       on_run_ended=advance, backend=backend)
        except (ValueError, RayUnavailable) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        worker.run()
        return 0
    for flag, value in (("--ray-address", args.ray_address), ("--slots", args.slots)):
        if value is not None:
            print(f"error: {flag}: {value!r} is not allowed with --executor local; allowed: "
                  "only with --executor ray", file=sys.stderr)
            return 2
    try:
        slots = make_slots(args.gpus, args.runs_per_gpu, args.gpu_memory_mb)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.setup("worker")
    Worker(open_engine(), slots, once=args.once, worker_id=args.worker_id,
           on_run_ended=advance, backend=backend).run()
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from cnn_ablation.jobs.liveness import reap_lost_runs
    from cnn_ablation.run_report import LISTED_COLUMNS, print_runs, run_dict
    from cnn_ablation.storage import listings
    from cnn_ablation.storage.run_filters import RunFilter
    from cnn_ablation.storage.runs import check_tags

    try:
        tags = check_tags(args.tag or [])
        if args.limit < 1:
            raise ValueError(f"--limit: {args.limit} is not allowed; allowed: 1 or more "
                             "(--all lists every run)")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine = open_engine()
    reap_lost_runs(engine)
    filters = RunFilter(statuses=(args.status,) if args.status else (), tags=tags)
    rows = listings.run_rows(engine, filters, columns=LISTED_COLUMNS,
                             newest=None if args.all else args.limit)
    # Only the newest --limit are read and printed: at 100,000 runs a full table is seconds of
    # formatting and 100,000 lines no one reads (--all prints them).
    matching = listings.count_runs(engine, filters) \
        if not args.all and len(rows) == args.limit else len(rows)
    if args.json:
        print(json.dumps([run_dict(row) for row in rows], indent=1))
    elif not rows and (args.status or tags):
        asked = ", ".join([*([f"status {args.status}"] if args.status else []),
                           *([f"tag {t}" for t in tags])])
        print_runs(rows, asked, listings.count_runs(engine))
    else:
        print_runs(rows)
    if matching > len(rows):
        print(f"the newest {len(rows):,} of {matching:,} runs; --all lists every one, --limit N "
              "the newest N", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from cnn_ablation.jobs.liveness import reap_lost_runs
    from cnn_ablation.run_report import print_run
    from cnn_ablation.storage import curves, runs

    engine = open_existing_engine(f"run {args.run_id}")
    reap_lost_runs(engine)
    run = runs.find_run_or_raise(engine, args.run_id)
    print_run(run, curves.epoch_rows(engine, [run.id]), as_json=args.json)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from cnn_ablation.storage import lifecycle

    status = lifecycle.request_cancel(open_existing_engine(f"run {args.run_id}"), args.run_id, now=args.now)
    running = ("stopping now; the partial epoch is not kept" if args.now else
               "stopping after its current epoch, which is kept (--now stops at once)")
    word = {"cancelled": "cancelled (it had not started)", "running": running}
    print(f"run {args.run_id}: {word.get(status, f'already {status}; nothing to cancel')}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from cnn_ablation.jobs.launch import retry

    print(retry(open_existing_engine(f"run {args.run_id}"), args.run_id))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from cnn_ablation.jobs.launch import delete_runs

    try:
        removed = delete_runs(open_existing_engine(f"run {args.run_id}"), [args.run_id])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = f"; removed {', '.join(map(str, removed))}" if removed else ""
    print(f"run {args.run_id}: deleted{files}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    """Rename a run, add or remove tags, set its comment; only what is given changes."""
    from cnn_ablation.storage import runs

    try:  # everything typed is checked before the database is opened
        if args.name is not None:
            runs.check_label_name(args.name)
        added, removed = runs.check_tags(args.tag or []), runs.check_tags(args.untag or [])
        if args.comment is not None:
            runs.check_comment(args.comment)
        engine = open_existing_engine(f"run {args.run_id}")
        run = runs.find_run_or_raise(engine, args.run_id)
        tags = None
        if added or removed:
            tags = [t for t in (*run.tags, *added) if t not in removed]
        run = runs.update_labels(engine, args.run_id, name=args.name, tags=tags,
                                 comment=args.comment)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"run {run.id}: name {run.name!r}, tags {', '.join(run.tags) or '(none)'}, "
          f"comment {'(none)' if run.comment is None else repr(run.comment)}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from cnn_ablation.jobs.cleanup import collect

    lines = collect(open_engine(), dry_run=args.dry_run)
    for line in lines:
        print(line)
    print(f"{len(lines)} item(s) {'to remove' if args.dry_run else 'removed'}")
    return 0


def cmd_execute(args: argparse.Namespace) -> int:
    import logging

    from cnn_ablation import log

    log.setup("run", args.run_id)
    quiet_keras_import()
    from sqlalchemy.exc import SQLAlchemyError

    from cnn_ablation.jobs import exit_codes
    from cnn_ablation.training.run import execute

    logger = logging.getLogger("cnn_ablation.training")
    try:
        status = execute(open_engine(), args.run_id, echo=logger.info, parent_pid=args.parent_pid)
    except SQLAlchemyError as exc:
        text = str(exc).lower()
        if "read-only" in text or "readonly" in text:
            print(f"error: the database is read-only for this process: {str(exc).splitlines()[0]}",
                  file=sys.stderr)
            return exit_codes.CANNOT_WRITE
        raise
    logger.info("run %s: %s", args.run_id, status)
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    """The live workers (a heartbeat within 3 beats) and the runs each trains; --stop sends one
    (or every one of this machine's) SIGTERM: each of its runs finishes or checkpoints its epoch
    and goes back to the queue, then the worker exits. What a Ctrl-C on `make run` leaves
    training (the dashboard's own worker) is found and stopped this way."""
    import signal

    from cnn_ablation.run_report import format_duration, text_table
    from cnn_ablation.storage import clock, workers

    engine = open_existing_engine("workers")
    live = [_worker_record(w) for w in
            workers.live_workers(engine, 3 * settings().heartbeat_s).to_dict("records")]
    runs: dict[str, list[int]] = {}
    for run in workers.running_runs_with_owner(engine):
        runs.setdefault(run.worker_id or "", []).append(run.run_id)
    here = workers.this_host()
    if args.stop is not None:
        chosen = [w for w in live if args.stop in ("all", w["id"])]
        if args.stop != "all" and not chosen:
            print(f"error: --stop: {args.stop!r} is not allowed; allowed: the id of a live "
                  f"worker ({', '.join(w['id'] for w in live) or 'none is running'}) or all",
                  file=sys.stderr)
            return 2
        for w in chosen:
            started = workers.process_started(w["pid"]) if w["pid"] else None
            mine = w["host_id"] == here and started is not None and (
                w["process_started_at"] is None or abs(started - w["process_started_at"]) < 2)
            if not mine:
                print(f"worker {w['id']} runs on {w['host']}: stop it there (SIGTERM to its pid "
                      f"{w['pid']})")
                continue
            os.kill(w["pid"], signal.SIGTERM)
            print(f"asked worker {w['id']} (pid {w['pid']}) to stop: its runs "
                  f"({', '.join(f'#{r}' for r in runs.get(w['id'], [])) or 'none'}) finish "
                  "their epoch, keep a checkpoint and go back to the queue")
        return 0
    if args.json:
        print(json.dumps([{**w, "runs": runs.get(w["id"], [])} for w in live], indent=1))
        return 0
    if not live:
        print("no worker is running: `python -m cnn_ablation worker` starts one (the dashboard "
              "starts its own unless ABLATION_START_WORKER=0)")
        return 0
    now = clock.now(engine)
    print(text_table({
        "worker": [w["id"] for w in live], "host": [w["host"] for w in live],
        "pid": [w["pid"] or "–" for w in live], "slots": [w["slots"] for w in live],
        "up": [format_duration(now - w["started_at"]) for w in live],
        "runs": [", ".join(f"#{r}" for r in runs.get(w["id"], [])) or "–" for w in live],
    }))
    print("stop one: python -m cnn_ablation workers --stop ID (or all); its runs go back to "
          "the queue")
    return 0


def _worker_record(row: dict) -> dict:
    """A workers row with NaN (pandas' missing value) as None and the pid a whole number: a
    worker still starting has no pid yet."""
    import math

    out = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
    pid = out.get("pid")
    out["pid"] = int(pid) if pid is not None else None
    return out
