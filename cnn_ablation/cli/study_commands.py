"""`study create|list|show|fill|rerun-failed|export|report|cancel|delete`."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from cnn_ablation.cli.common import config_from_args, open_engine, open_existing_engine
from cnn_ablation.config import ConfigError
from cnn_ablation.studies.factors import parse_factor

if TYPE_CHECKING:  # studies imports pandas: only the commands that need it load it
    from cnn_ablation.studies.adaptive_rule import AdaptiveRule
    from cnn_ablation.studies.spec import StudyView


def power_pp(text: str) -> float:
    """`--power-pp`: the change (percentage points) the "seeds needed" figure is for."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 100:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: a number of "
                                         "percentage points > 0 and < 100")
    return value


def _adaptive_rule(args: argparse.Namespace) -> AdaptiveRule | None:
    """The adaptive-seeds rule the flags ask for (ConfigError naming the flag if not valid)."""
    from cnn_ablation.studies.adaptive_rule import AdaptiveRule

    if args.target_pp is None:
        for flag, value in (("max_seeds", args.max_seeds), ("seed_step", args.seed_step)):
            if value is not None:
                raise ConfigError(flag, value, "only with --target-pp (adaptive seeds)")
        return None
    if args.max_seeds is None:
        raise ConfigError("max_seeds", None, "a whole number: adaptive seeds (--target-pp) stop "
                                             "at this many seeds per cell at the latest")
    target = args.target_pp
    if not (isinstance(target, float) and math.isfinite(target) and 0 < target < 100):
        raise ConfigError("target_pp", target, "a number of percentage points > 0 and < 100")
    return AdaptiveRule(half_width=target / 100, max_seeds=args.max_seeds,
                        step=args.seed_step if args.seed_step is not None else 2,
                        metric=args.metric or ("test_accuracy" if args.val_split == 0
                                               else "final_val_accuracy"))


@contextlib.contextmanager
def writable_folder(out: Path) -> Iterator[None]:
    """`--out` refused as a ConfigError (exit 2, one line) when its files cannot be written
    there: an existing file, /proc, a folder this user may not write."""
    try:
        yield
    except OSError as exc:
        raise ConfigError("out", str(out), "a folder this user can write (here: "
                          f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''})"
                          ) from exc


# --- study commands -------------------------------------------------------------------------------
def cmd_study_create(args: argparse.Namespace) -> int:
    from cnn_ablation.config import check_name
    from cnn_ablation.jobs.launch import new_run
    from cnn_ablation.studies import estimate as study_estimate
    from cnn_ablation.studies import grid as study_grid
    from cnn_ablation.studies.presets import study_preset
    from cnn_ablation.studies.spec import StudySpec

    base = config_from_args(args)
    rule = _adaptive_rule(args)
    judging = {"metric": args.metric or "", "smallest_effect": args.smallest_pp / 100}
    if args.study_preset and args.factor:
        raise ConfigError("factor", " ".join(args.factor), "nothing with --study-preset (a "
                          "preset brings its own factors): drop one of the two")
    if args.study_preset:
        spec = replace(study_preset(args.study_preset, base, args.seeds, rule), **judging)
    else:
        spec = StudySpec(base, dict(parse_factor(f) for f in args.factor), args.design, args.seeds,
                         adaptive=rule, **judging)
    spec.check_new()
    name = check_name(args.name or args.study_preset or "study")
    # Every cell checked (and named as study_grid.create names its runs) before the database is
    # opened: a refused study writes nothing. Seeds differ only in the seed, always valid.
    # Your own network: its factors must name its layers (asked of the probe, cached) first.
    study_grid.check_network(spec)
    for cell in spec.cells():
        new_run(cell.config, name=f"{name}: {cell.label}")
    engine = open_engine()
    seconds, basis = study_estimate.estimate_seconds(engine, spec)
    study_id, queued = study_grid.create(engine, spec, name)
    print(f"study {study_id}: {len(spec.cells())} cells x {spec.seeds} seeds; queued "
          f"{len(queued)} runs" + (f" ({queued[0]}..{queued[-1]})" if queued else ""))
    if rule is not None:
        print(f"adaptive seeds: {rule.text()}; round 1 has {spec.seeds} seeds per cell")
    print(f"estimate: {study_estimate.minutes_text(seconds)} ({seconds:.0f} s; {basis})"
          if seconds is not None else f"estimate: {basis}")
    return 0


def cmd_study_list(args: argparse.Namespace) -> int:
    from cnn_ablation.storage.studies import list_studies
    from cnn_ablation.studies import grid as study_grid
    from cnn_ablation.studies import rounds as study_rounds

    engine = open_engine()
    study_rounds.advance(engine)
    for study in list_studies(engine):
        view = study_grid.load(engine, study.id)
        grid = study_grid.grid(engine, view)
        done, total = study_grid.progress(view, grid)
        state = "complete" if done == total else "provisional"
        rule = view.spec.adaptive
        extra = ""
        if rule is not None:
            extra = f", adaptive round {rule.round}" + (" (stopped)" if rule.stopped else "")
        print(f"{study.id:4d}  {study.name:30s} {len(grid)} cells x {view.spec.seeds} seeds, "
              f"{state}: {done} of {total} runs{extra}")
    return 0


def _study(args: argparse.Namespace) -> tuple[Engine, StudyView]:
    """The engine and the study `args.study_id` (StudyNotFound, exit 2, if there is none)."""
    from cnn_ablation.studies import grid as study_grid

    engine = open_existing_engine(f"study {args.study_id}")
    return engine, study_grid.load(engine, args.study_id)


def cmd_study_fill(args: argparse.Namespace) -> int:
    from cnn_ablation.studies import grid as study_grid

    engine, view = _study(args)
    action = study_grid.fill_missing if args.study_command == "fill" else study_grid.rerun_failed
    queued = action(engine, view.id)
    print(f"study {view.id}: queued {len(queued)} runs {queued}")
    return 0


def cmd_study_export(args: argparse.Namespace) -> int:
    from cnn_ablation.studies import results as study_results

    engine, view = _study(args)
    result = study_results.results(engine, view, args.metric)
    from cnn_ablation.run_report import csv_text

    out = Path(args.out)
    with writable_folder(out):
        out.mkdir(parents=True, exist_ok=True)
        (out / f"study-{view.id}-runs.csv").write_text(csv_text(result["runs"]))
        (out / f"study-{view.id}-cells.csv").write_text(csv_text(result["summary"]))
    print(f"wrote {out / f'study-{view.id}-runs.csv'} and {out / f'study-{view.id}-cells.csv'}")
    return 0


def cmd_study_report(args: argparse.Namespace) -> int:
    from cnn_ablation.studies import results as study_results
    from cnn_ablation.studies import words
    from cnn_ablation.studies.report import write_report

    engine, view = _study(args)
    result = study_results.results(engine, view, args.metric, power_pp=args.power_pp)
    with writable_folder(Path(args.out)):
        written = write_report(Path(args.out), view, result)
    for path in written:
        print(f"wrote {path}")
    print(words.status_line(result))
    return 0


def cmd_study_cancel(args: argparse.Namespace) -> int:
    from cnn_ablation.studies import grid as study_grid

    engine, view = _study(args)
    outcome = study_grid.cancel(engine, view.id, now=args.now)
    how = "at once; their partial epochs are not kept" if args.now else \
        "after their current epoch, which is kept (--now stops at once)"
    print(f"study {view.id}: cancelled {len(outcome.cancelled)} queued run(s); "
          f"{len(outcome.stopping)} running run(s) stopping {how}")
    return 0


def cmd_study_delete(args: argparse.Namespace) -> int:
    from cnn_ablation.studies import grid as study_grid

    engine, view = _study(args)
    try:
        deleted = study_grid.delete(engine, view.id, with_runs=args.with_runs)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kept = "" if args.with_runs else "; its runs are kept (--with-runs deletes them)"
    print(f"study {view.id}: deleted" + (f" with {len(deleted)} run(s)" if args.with_runs
                                          else kept))
    return 0


def cmd_study_show(args: argparse.Namespace) -> int:
    from cnn_ablation.studies import estimate as study_estimate
    from cnn_ablation.studies import grid as study_grid
    from cnn_ablation.studies import results as study_results
    from cnn_ablation.studies import rounds as study_rounds
    from cnn_ablation.studies import words
    from cnn_ablation.studies.words import readable_effects, readable_summary

    engine, view = _study(args)
    if view.spec.adaptive is not None:
        study_rounds.advance(engine)
        view = study_grid.load(engine, view.id)
    result = study_results.results(engine, view, args.metric, power_pp=args.power_pp)
    left = study_estimate.remaining(engine, view)
    if args.json:
        print(json.dumps({**study_results.result_json(view, result), "remaining": left}, indent=1))
        return 0
    print(f"study {view.id}: {view.name} ({words.status_line(result)})")
    if left["runs"]:
        print(study_estimate.remaining_text(left))
    print()
    if view.spec.adaptive is not None:
        print(study_grid.adaptive_text(view, result["runs"]) + "\n")
    print(result["grid"].to_string(index=False))
    print("\n" + readable_summary(result["summary"]).to_string(index=False))
    print(f"({words.REPEATS_NOTE})")
    print(f"\n{result['effects_kind']} on {result['metric']}"
          + (" (primary):" if result["metric"] == view.spec.metric else " (exploratory):"))
    print(readable_effects(result["effects"]).to_string(index=False))
    for row in result["interactions"].to_dict("records"):
        print("interaction: " + words.interaction_text(row))
    print(words.effects_note(result))
    print("\n" + words.power_text(result))
    print("\n" + result["words"].replace("**", ""))
    return 0
