"""Turning validated configs into runs: submit, repeat over seeds, retry. The CLI and the pages
both call these, so a variant is checked and stored the same way whichever door it came in by."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine

from cnn_ablation.architecture import count_params
from cnn_ablation.config import (
    ConfigError,
    RunConfig,
    check_name,
    check_seed_count,
    new_run_problems,
)
from cnn_ablation.data.arrays import DatasetUnavailable
from cnn_ablation.data.datasets import check_fits, resolve
from cnn_ablation.settings import settings
from cnn_ablation.storage import runs
from cnn_ablation.storage.records import NewRun


def prepare(config: RunConfig) -> tuple[RunConfig, int]:
    """Resolve what the run must state (a folder's image size; your network's Dropout rates) and
    refuse what cannot run. Returns the final config and its parameter count. Raises
    ConfigError."""
    for problem in new_run_problems(config):  # a stored run that had one still loads (config);
        raise problem  # a new one is refused here, page and CLI alike
    try:
        config = resolve(config)
        info = check_fits(config)
    except DatasetUnavailable as exc:
        raise ConfigError("dataset", config.dataset, f"a dataset that exists here ({exc})") from exc
    if config.network is not None:  # your own network: Keras knows, in a helper process
        from cnn_ablation.networks import registry as networks

        networks.resolve(config.network)
        answer = networks.probe(config.network, info.shape, info.num_classes, config.bn_off,
                                config.layer_dropout)
        if not answer["ok"]:
            raise ConfigError(answer["field"], config.network, answer["error"].split(
                "allowed: ", 1)[-1])
        # the run states every Dropout layer's rate, the network's own where none was asked
        # for: what it trains with, not a default it never used
        rates = {d["name"]: float(d["rate"]) for d in answer["dropout"]}
        rates.update(dict(config.layer_dropout))
        config = config.with_changes(layer_dropout=tuple(rates.items()))
        return config, int(answer["params"])
    return config, count_params(config.preset, config.switches, info.shape, info.num_classes)


def new_run(config: RunConfig, name: str = "", study_id: int | None = None,
            retry_of: int | None = None) -> NewRun:
    """A validated config as the row to queue (ConfigError if it cannot run here)."""
    check_name(name)
    config, params = prepare(config)
    return NewRun(
        config_json=config.to_json(), config_hash=config.config_hash,
        variant_hash=config.variant_hash, label=config.label, dataset=config.dataset,
        preset=config.preset, seed=config.seed, epochs=config.epochs, params=params,
        name=name, study_id=study_id, retry_of=retry_of,
    )


def with_seeds(config: RunConfig, repeats: int) -> list[RunConfig]:
    """`repeats` copies of a variant with seeds 0..repeats-1 (the seed of `config` is replaced)."""
    check_seed_count(repeats)
    if repeats == 1:
        return [config]
    return [config.with_changes(seed=s) for s in range(repeats)]


def submit(engine: Engine, configs: list[RunConfig], name: str = "",
           study_id: int | None = None) -> list[int]:
    """Validate every config first, then queue them all in one transaction (all or nothing)."""
    new_runs = [new_run(c, name=name, study_id=study_id) for c in configs]
    return runs.create_runs(engine, new_runs)


def retry(engine: Engine, run_id: int) -> int:
    """A new queued run with the same config; the old run and its epochs stay as they are."""
    old = runs.find_run_or_raise(engine, run_id)
    config = RunConfig.from_json(old.config_json)
    new = new_run(config, name=old.name, study_id=old.study_id, retry_of=old.id)
    return runs.create_runs(engine, [new])[0]


def run_files(run_id: int, log_path: str | None = None,
              checkpoint_path: str | None = None) -> list[Path]:
    """The files a run leaves on disk: its log, its checkpoint, its TensorBoard folder. A stored
    path counts only if its name is the run's own (`run-N-….log`, `run-N.keras`), so a database
    entry can never point a delete at another file."""
    config = settings()
    paths = [config.checkpoints / f"run-{run_id}.keras", config.tensorboard_dir(run_id)]
    if log_path and (Path(log_path).name.startswith(f"run-{run_id}-")
                     or Path(log_path).name == f"run-{run_id}.log"):
        paths.insert(0, Path(log_path))
    if checkpoint_path and Path(checkpoint_path).name == f"run-{run_id}.keras":
        paths.append(Path(checkpoint_path))
    return list(dict.fromkeys(paths))


def delete_runs(engine: Engine, run_ids: Sequence[int]) -> list[Path]:
    """Delete runs (all or nothing; running ones are refused with ValueError, a missing id is
    RunNotFound) with their epochs, then their files (`run_files`). Returns the files and
    folders removed."""
    removed = []
    for run in runs.delete_runs(engine, run_ids):
        for path in run_files(run.id, run.log_path, run.checkpoint_path):
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
                else:
                    continue
            except OSError:  # the rows are gone; a file we cannot remove stays
                continue
            removed.append(path)
    return removed
