"""A run's checkpoint: where it lives (`$ABLATION_HOME/checkpoints/run-N.keras`, saved when the
worker stops and the run goes back to the queue), and the error when a resumed run cannot find it."""

from __future__ import annotations

from pathlib import Path

from cnn_ablation.settings import settings


class CheckpointMissing(RuntimeError):
    """A run went back to the queue with a checkpoint that this host cannot read (it is on the
    disk of the host whose worker stopped it, or was removed). The run fails saying so, before
    anything is loaded: starting again at epoch 1 under the same run would put a second
    training's epochs on the curve of the first, and its recorded epochs always stay."""

    def __init__(self, path: str | None, host: str, epochs: int):
        super().__init__(
            f"checkpoint {path or '(none)'} not found on {host}: the run cannot resume after "
            f"epoch {epochs} here (the checkpoint is on the disk of the host whose worker "
            f"stopped it, or was removed); its {epochs} epoch{'s' if epochs != 1 else ''} "
            "are kept; Retry queues it again as a new run from epoch 1")


def checkpoint_path(run_id: int) -> Path:
    return settings().home / "checkpoints" / f"run-{run_id}.keras"


def remove_checkpoint(run_id: int) -> None:
    checkpoint_path(run_id).unlink(missing_ok=True)
