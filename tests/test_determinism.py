"""Same config and seed, same result: the data split is the same down to the indices, and on the
CPU two real runs give the same first-epoch training loss (to 1e-6). What a study's seeds rely
on: seeds differ by their seed alone, and a repeat of a (cell, seed) repeats the run."""

import numpy as np
import pytest

from cnn_ablation.config import RunConfig
from cnn_ablation.data import datasets
from cnn_ablation.data.arrays import Dataset
from cnn_ablation.storage.curves import epochs_frame

pytest.importorskip("keras")
from cnn_ablation.training.pipeline import split  # noqa: E402
from cnn_ablation.training.run import train_run  # noqa: E402


def indexed(n: int = 500) -> Dataset:
    """A dataset whose every training image carries its own index in its pixels (and labels
    that are the index too), so a split can be read back as indices."""
    data = datasets.load("synthetic:100")
    x = np.zeros((n, 4, 4, 1), dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = np.arange(n) // 256, np.arange(n) % 256
    return Dataset(data.info, x, np.arange(n), data.x_test, data.y_test)


def indices(part) -> np.ndarray:
    x, y = part
    from_pixels = x[:, 0, 0, 0].astype(int) * 256 + x[:, 0, 1, 0]
    assert (from_pixels == y).all()  # images and labels stay together
    return y


@pytest.mark.parametrize("val_split,limit", [(0.1, None), (0.25, 300)])
def test_the_same_config_and_seed_give_the_same_split_indices(val_split, limit):
    config = RunConfig(dataset="synthetic:100", seed=7, val_split=val_split, limit_train=limit)
    # a fresh copy of the data for each split, as each run loads its own (split may reorder
    # the training array in place)
    (fit_a, val_a), (fit_b, val_b) = (split(config, indexed()) for _ in range(2))
    assert np.array_equal(indices(fit_a), indices(fit_b))
    assert np.array_equal(indices(val_a), indices(val_b))
    n = limit or 500
    assert sorted([*indices(fit_a), *indices(val_a)]) == list(range(n))  # a partition
    assert len(indices(val_a)) == round(n * val_split)
    (_, other_val) = split(config.with_changes(seed=8), indexed())
    assert not np.array_equal(indices(other_val), indices(val_a))  # another seed, another split


@pytest.mark.slow
def test_two_cpu_runs_of_one_config_and_seed_have_the_same_first_epoch_loss(engine, make_run):
    config = RunConfig(dataset="synthetic:300", epochs=1, seed=3)
    losses = []
    for _ in range(2):
        run_id = make_run(config, "running")
        assert train_run(engine, run_id) == "completed"
        epoch = epochs_frame(engine, [run_id]).iloc[0]
        losses.append((epoch["loss"], epoch["accuracy"], epoch["val_loss"]))
    (loss_a, acc_a, val_a), (loss_b, acc_b, val_b) = losses
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert acc_a == pytest.approx(acc_b, abs=1e-6) and val_a == pytest.approx(val_b, abs=1e-6)
