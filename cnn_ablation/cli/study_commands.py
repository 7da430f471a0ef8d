"""`study create|list|show|fill|rerun-failed|export`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from cnn_ablation.cli.common import config_from_args, open_engine
from cnn_ablation.study_spec import parse_factor

if TYPE_CHECKING:  # studies imports pandas: only the commands that need it load it
    from cnn_ablation.studies import StudyView


# --- study commands -------------------------------------------------------------------------------
def cmd_study_create(args: argparse.Namespace) -> int:
    from cnn_ablation import studies
    from cnn_ablation.config import check_name
    from cnn_ablation.launch import new_run
    from cnn_ablation.study_spec import StudySpec, study_preset

    base = config_from_args(args)
    if args.study_preset:
        spec = study_preset(args.study_preset, base, args.seeds)
    else:
        spec = StudySpec(base, dict(parse_factor(f) for f in args.factor), args.design, args.seeds)
    name = check_name(args.name or args.study_preset or "study")
    # Every cell checked (and named as studies.create names its runs) before the database is
    # opened: a refused study writes nothing. Seeds differ only in the seed, always valid.
    for cell in spec.cells():
        new_run(cell.config, name=f"{name}: {cell.label}")
    engine = open_engine()
    study_id, queued = studies.create(engine, spec, name)
    print(f"study {study_id}: {len(spec.cells())} cells x {spec.seeds} seeds; queued "
          f"{len(queued)} runs" + (f" ({queued[0]}..{queued[-1]})" if queued else ""))
    seconds, basis = studies.estimate_seconds(engine, spec)
    print(f"estimate: {seconds / 60:.1f} min ({basis})" if seconds else f"estimate: {basis}")
    return 0


def cmd_study_list(args: argparse.Namespace) -> int:
    from cnn_ablation import studies
    from storage.studies import list_studies

    engine = open_engine()
    for study in list_studies(engine):
        view = studies.load(engine, study.id)
        grid = studies.grid(engine, view)
        print(f"{study.id:4d}  {study.name:30s} {len(grid)} cells x {view.spec.seeds} seeds, "
              f"{int(grid['done'].sum())}/{len(grid) * view.spec.seeds} done")
    return 0


def _study(args: argparse.Namespace) -> tuple[Engine, StudyView]:
    """The engine and the study `args.study_id` (StudyNotFound, exit 2, if there is none)."""
    from cnn_ablation import studies

    engine = open_engine()
    return engine, studies.load(engine, args.study_id)


def cmd_study_fill(args: argparse.Namespace) -> int:
    from cnn_ablation import studies

    engine, view = _study(args)
    action = studies.fill_missing if args.study_command == "fill" else studies.rerun_failed
    queued = action(engine, view.id)
    print(f"study {view.id}: queued {len(queued)} runs {queued}")
    return 0


def cmd_study_export(args: argparse.Namespace) -> int:
    from cnn_ablation import studies

    engine, view = _study(args)
    result = studies.results(engine, view, args.metric)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result["runs"].to_csv(out / f"study-{view.id}-runs.csv", index=False)
    result["summary"].to_csv(out / f"study-{view.id}-cells.csv", index=False)
    print(f"wrote {out / f'study-{view.id}-runs.csv'} and {out / f'study-{view.id}-cells.csv'}")
    return 0


def cmd_study_show(args: argparse.Namespace) -> int:
    from cnn_ablation import studies
    from cnn_ablation.analysis import readable_effects, readable_summary

    engine, view = _study(args)
    result = studies.results(engine, view, args.metric)
    grid = studies.grid(engine, view, result["runs"])
    if args.json:
        print(json.dumps({"id": view.id, "name": view.name, "spec": view.spec.to_dict(),
                          "grid": grid.to_dict("records"),
                          "summary": json.loads(result["summary"].to_json(orient="records")),
                          "effects": json.loads(result["effects"].to_json(orient="records")),
                          "words": result["words"]}, indent=1))
        return 0
    print(f"study {view.id}: {view.name}\n")
    print(grid.to_string(index=False))
    print("\n" + readable_summary(result["summary"]).to_string(index=False))
    print(f"\neffects on {args.metric}:")
    print(readable_effects(result["effects"]).to_string(index=False))
    print("\n" + result["words"].replace("**", ""))
    return 0


