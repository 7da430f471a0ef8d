"""How long a study (or what is left of it) takes here: from this machine's recent finished runs
of the same network and dataset, scaled by images and epochs, over the workers' slots."""

from __future__ import annotations

import logging
import socket
import statistics

import pandas as pd
from sqlalchemy import Engine

from cnn_ablation.config import RunConfig
from cnn_ablation.data.datasets import dataset_info
from cnn_ablation.settings import settings
from cnn_ablation.storage import lookups, workers
from cnn_ablation.storage import studies as stored_studies
from cnn_ablation.storage.runs import list_runs
from cnn_ablation.storage.status import ACTIVE
from cnn_ablation.studies.spec import StudySpec, StudyView

log = logging.getLogger(__name__)


RECENT_RUNS = 10  # finished runs the time estimate is built from, the most recent first


# --- time estimate ------------------------------------------------------------------------------
def _fit_images(config: RunConfig) -> int:
    """Training images one epoch fits: after the limit and the validation split."""
    n = dataset_info(config.dataset, config.image_size).train_size
    n = min(config.limit_train or n, n)
    return max(n - int(round(n * config.val_split)), 1)


def _size_key(config: RunConfig) -> tuple:
    return (config.limit_train, config.val_split, config.batch_size, config.image_size)


def _where_runs_train(engine: Engine) -> tuple[list[str], list[str] | None, int]:
    """(hosts, devices, slots) of the live workers; none alive: this host, any device, 1."""
    live = workers.live_workers(engine, max_age=3 * settings().heartbeat_s)
    devices = [d for slots in live["slots"] for d in str(slots).split(",")
               if d.startswith(("cpu", "gpu:"))]
    if not devices:
        return [socket.gethostname()], None, 1
    return sorted(set(live["host"])), sorted(set(devices)), len(devices)


def estimate_seconds(engine: Engine, spec: StudySpec, configs: list[RunConfig] | None = None,
                     slots: int | None = None) -> tuple[float | None, str]:
    """(seconds, basis) for the study's runs still to do (or `configs`), from the 10 most recent
    finished runs of the same preset and dataset on the live workers' hosts and devices
    (this host when no worker is alive): medians of their measured start-up, first epoch, later
    epochs and test pass, and of the hand-over between runs; epochs scaled by training images
    only where no run of the same size and batch has finished. Divided by the slots that train
    at once. (None, why) where nothing comparable has run."""
    base = spec.base
    if configs is None:
        configs = [c for _, c in spec.runs()]
        done, pending = lookups.same_config_runs(engine, [c.config_hash for c in configs])
        taken = {r.config_hash for r in done + pending}
        configs = [c for c in configs if c.config_hash not in taken]
    if not configs:
        return 0.0, "nothing left to run"
    hosts, devices, live_slots = _where_runs_train(engine)
    slots = slots or live_slots
    # your own networks share one preset ("custom"): read more, keep this network's runs below
    timings = stored_studies.run_timings(engine, base.preset, base.dataset, hosts, devices,
                                         recent=2 * RECENT_RUNS if base.network is None else 500)
    if base.network is not None and len(timings):
        timings = timings[[RunConfig.from_json(c).network == base.network
                           for c in timings["config_json"]]]
    # the most recent runs: what this machine does now (its load changes; old runs mislead)
    timings = timings.sort_values("finished_at").tail(RECENT_RUNS)
    if timings.empty:
        where = f"on {', '.join(devices)}" if devices else "on this machine"
        return None, (f"no estimate yet: no finished {base.preset} run on {base.dataset} {where}; "
                      "the first one gives the estimate")
    observed = [RunConfig.from_json(c) for c in timings["config_json"]]
    timings = timings.assign(size=[_size_key(c) for c in observed],
                             batch=[c.batch_size for c in observed],
                             fit_images=[_fit_images(c) for c in observed])
    total, scaled = 0.0, 0
    for config in configs:
        same = timings[timings["size"] == _size_key(config)]
        if same.empty:
            scaled += 1
            same_batch = timings[timings["batch"] == config.batch_size]
            pool = same_batch if len(same_batch) else timings
            ratio = _fit_images(config) / pool["fit_images"]
        else:
            pool, ratio = same, pd.Series(1.0, index=same.index)
        first = float((pool["first_epoch_s"] * ratio).median())
        later_values = (pool["later_epoch_s"] * ratio).dropna()
        later = float(later_values.median()) if len(later_values) else first
        total += (float(pool["startup_s"].median()) + first + (config.epochs - 1) * later
                  + float(pool["test_s"].median()))
    gaps = stored_studies.handover_seconds(engine, sorted(set(timings["worker_id"].dropna())))
    handover = statistics.median(gaps) if gaps else 0.0
    total = (total + handover * len(configs)) / max(slots, 1)
    basis = (f"{len(configs)} runs from {len(timings)} finished run(s) of {base.preset} on "
             f"{base.dataset}{' on ' + ', '.join(devices) if devices else ''}: start-up "
             f"{timings['startup_s'].median():.1f} s, test {timings['test_s'].median():.1f} s, "
             f"epochs measured")
    if scaled:
        basis += f" (scaled by training images for {scaled} run(s) of another size)"
    return total, basis + f"; {slots} slot(s)"


def remaining(engine: Engine, view: StudyView) -> dict:
    """The study's queued and running runs and the time they still need (estimate_seconds)."""
    pending = list_runs(engine, study_id=view.id, statuses=[s.value for s in ACTIVE])
    if not pending:
        return {"runs": 0, "seconds": 0.0, "basis": "nothing left to run"}
    seconds, basis = estimate_seconds(engine, view.spec,
                                      configs=[RunConfig.from_json(r.config_json) for r in pending])
    return {"runs": len(pending), "seconds": seconds, "basis": basis}


def remaining_text(left: dict) -> str:
    return (f"Remaining: {left['runs']} queued or running run(s), "
            f"{minutes_text(left['seconds'])} ({left['basis']}).")


def minutes_text(seconds: float | None) -> str:
    if seconds is None:
        return "no estimate yet"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    return f"about {seconds / 60:.0f} min" if seconds < 5400 else f"about {seconds / 3600:.1f} h"
