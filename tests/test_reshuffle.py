"""The experiment behind every number: each epoch of a run sees its images in a new order, two
runs of one seed see the same orders, and a run stopped by SIGTERM and resumed from its checkpoint
is, epoch by epoch, the run that was never interrupted (Dropout's masks included)."""

import numpy as np
import pytest

from cnn_ablation.config import RunConfig
from cnn_ablation.storage.curves import epochs_frame
from cnn_ablation.storage.runs import find_run
from tests.support import requeued_by_sigterm

pytest.importorskip("keras")
from cnn_ablation.training.pipeline import EpochBatches, epoch_order  # noqa: E402


def epoch_labels(batches: EpochBatches, epoch: int) -> np.ndarray:
    """The labels of one epoch's batches, in the order fit gets them (labels = image index)."""
    batches.start_epoch(epoch)
    return np.concatenate([batches[i][1] for i in range(len(batches))])


def indexed(n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    x = np.zeros((n, 2, 2, 1), dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = np.arange(n) // 256, np.arange(n) % 256
    return x, np.arange(n)


def test_reshuffle_gives_each_epoch_its_own_order_and_one_seed_the_same_orders():
    x, y = indexed()
    first, second, other_seed = (EpochBatches(x, y, 32, seed) for seed in (3, 3, 4))
    orders = [epoch_labels(first, epoch) for epoch in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(1000))  # every image once per epoch
    assert len({tuple(order[:32]) for order in orders}) == 3  # three different first batches
    assert all(not np.array_equal(a, b) for a, b in zip(orders, orders[1:], strict=False))
    for epoch, order in enumerate(orders):  # the same seed, the same order, epoch by epoch
        assert np.array_equal(epoch_labels(second, epoch), order)
    assert not np.array_equal(epoch_labels(other_seed, 0), orders[0])
    batch_x, batch_y = first[0]  # images travel with their labels
    assert np.array_equal(batch_x[:, 0, 0, 0].astype(int) * 256 + batch_x[:, 0, 1, 0], batch_y)


def test_reshuffle_order_depends_on_seed_and_epoch_alone_so_a_resumed_epoch_repeats_it():
    """What makes a resume exact: epoch 3's order is drawn from (seed, 3), not from the epochs
    a process happened to run before it."""
    x, y = indexed(500)
    fresh = EpochBatches(x, y, 50, seed=11)
    straight = [epoch_labels(fresh, epoch) for epoch in range(4)][3]
    resumed = EpochBatches(x, y, 50, seed=11)
    assert np.array_equal(epoch_labels(resumed, 3), straight)
    assert np.array_equal(straight, y[epoch_order(11, 3, 500)])


@pytest.mark.slow
def test_reshuffle_reaches_a_real_run_each_epoch_in_its_own_order(engine, make_run):
    """The production path (`prepare_training` then `fit`) trains on EpochBatches and moves it to
    each epoch's order: after 3 epochs it holds epoch 3's (0-based 2) order."""
    from cnn_ablation.training.run import prepare_training
    from tests.support import TEST_WORKER

    config = RunConfig(dataset="synthetic:400", epochs=3, seed=5, val_split=0.0)
    run_id = make_run(config, "running")
    setup = prepare_training(engine, find_run(engine, run_id), TEST_WORKER, control=None)
    setup.fit(callbacks=[])
    assert isinstance(setup.epoch_batches, EpochBatches)
    assert np.array_equal(setup.epoch_batches.order, epoch_order(5, 2, len(setup.epoch_batches.y)))


@pytest.mark.slow
def test_a_sigterm_resumed_run_with_dropout_equals_the_uninterrupted_run_in_every_epoch(
        engine, home, workers):
    """SIGTERM after epoch 1 -> checkpoint -> the next worker resumes; the same config run again
    without interruption gives the same loss in every epoch (to 1e-4). Before Dropout's generator
    was reseeded per (seed, epoch), resumed epochs replayed epoch 1's masks."""
    from cnn_ablation.jobs.launch import submit

    run_id, done = requeued_by_sigterm(engine, workers)
    assert workers("--once").wait(timeout=300) == 0
    config = RunConfig.from_json(find_run(engine, run_id).config_json)
    assert config.dropout > 0 and find_run(engine, run_id).status == "completed"
    (again,) = submit(engine, [config])
    assert workers("--once").wait(timeout=300) == 0
    resumed, straight = (epochs_frame(engine, [i]) for i in (run_id, again))
    assert resumed["epoch"].tolist() == straight["epoch"].tolist() == [1, 2, 3, 4]
    assert np.allclose(resumed["loss"], straight["loss"], rtol=0, atol=1e-4), (
        resumed["loss"].tolist(), straight["loss"].tolist())
    assert np.allclose(resumed["accuracy"], straight["accuracy"], rtol=0, atol=1e-4)
