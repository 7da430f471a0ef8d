"""The input pipeline of a run: the training limit and the seeded validation split (still uint8,
no copy of the fit part), each epoch's order drawn from (seed, epoch) and served batch by batch,
every random op of the model reseeded per (seed, epoch), and how many steps go in one call."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from cnn_ablation.config import RunConfig
from cnn_ablation.data.arrays import Dataset, aligned_empty

# Training steps per call into the backend (Keras' `steps_per_execution`): the same steps on the
# same batches in the same order, run 16 at a time inside one graph call, so Python's per-step
# work (the data iterator, the callbacks) is paid once per 16 steps. On this project's 2-core
# CPU a step of the chapter's network took ~20 % longer one at a time (benchmarks/
# throughput_memory.py). Only where steps are that short: the built-in networks on images up to
# 64 x 64 (a call of 16 steps well under a second on a CPU); your own networks and larger
# images take one step per call, since their steps are long enough for Python's share to vanish,
# and progress, stop-now and the hang check (ABLATION_NO_PROGRESS_SECONDS) act between calls.
# Keras on PyTorch runs one step per call only.
STEPS_PER_EXECUTION = 16
FAST_STEP_MAX_PIXELS = 64 * 64
# Streams of random numbers drawn from a run's seed, each its own: the validation split uses the
# seed alone (`split`); the epoch orders and the random ops' states add the epoch and these.
ORDER_STREAM, RANDOM_OPS_STREAM = 1, 2


def steps_per_execution(config: RunConfig, shape: tuple[int, ...]) -> int:
    """Steps per call for this run's model (see STEPS_PER_EXECUTION); batch callbacks see the
    last step of each call."""
    if keras.backend.backend() == "torch" or config.network is not None:
        return 1
    return STEPS_PER_EXECUTION if shape[0] * shape[1] <= FAST_STEP_MAX_PIXELS else 1


def split(config: RunConfig, data: Dataset):
    """Training limit, then a seeded shuffle split into fit and validation parts (still uint8).

    The images are not copied for the fit part: the rows it keeps are moved up, in their
    order, within the training array itself (`data.x_train` is reordered: a run loads its
    dataset once and splits it once), so the fit part is a view of its start, aligned and
    contiguous for `as_tensor`. Only the validation rows are copied out first (val_split of
    the images). The parts hold the same rows in the same order as copying them would."""
    x, y = data.x_train, data.y_train
    if config.limit_train:
        x, y = x[: config.limit_train], y[: config.limit_train]
    n_val = int(round(len(x) * config.val_split))
    if n_val == 0:
        return (x, y), None  # no copy: the arrays go to fit as they are
    order = np.random.default_rng(config.seed).permutation(len(x))
    fit_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
    validation = (_take(x, val_idx), y[val_idx])
    if not (x.flags.writeable and x.flags.c_contiguous):  # cannot reorder in place: copy
        return (_take(x, fit_idx), y[fit_idx]), validation
    _move_up(x, fit_idx)
    return (x[: len(fit_idx)], y[fit_idx]), validation


def _move_up(x: np.ndarray, idx: np.ndarray, chunk: int = 4096) -> None:
    """x[:len(idx)] = x[idx] in place, for ascending `idx` (so idx[i] >= i): each chunk's rows
    are gathered before they are written, and no later chunk reads a row written earlier."""
    for start in range(0, len(idx), chunk):
        stop = min(start + chunk, len(idx))
        x[start:stop] = x[idx[start:stop]]


def _take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = aligned_empty((len(idx), *x.shape[1:]), x.dtype)  # aligned: see as_tensor
    return np.take(x, idx, axis=0, out=out)


def as_tensor(x: np.ndarray):
    """Images as a TensorFlow tensor sharing memory with `x` (DLPack, no copy).

    Given a NumPy array, Keras' `fit` copies it whole into TensorFlow and briefly holds a second
    copy while doing so (+300 MB peak for 50,000 CIFAR-sized images: benchmarks/). TensorFlow
    can read the array in place when it is C-contiguous and 64-byte aligned, which data/arrays.py
    and `split` ensure; anything else is passed on unchanged (Keras copies it, as before). Used
    for the validation part; the fit part reaches `fit` batch by batch (`EpochBatches`).
    """
    aligned = x.flags.c_contiguous and x.flags.writeable and x.ctypes.data % 64 == 0
    if keras.backend.backend() != "tensorflow" or not aligned:
        return x
    import tensorflow as tf

    try:
        return tf.experimental.dlpack.from_dlpack(x.__dlpack__())
    except (TypeError, ValueError, BufferError, RuntimeError):  # no DLPack here: let Keras copy
        return x


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the fit part's `n` images in epoch `epoch` (0-based) of a run seeded `seed`:
    a permutation drawn from (seed, epoch) alone, so every epoch is reshuffled, two runs of one
    seed see the same orders, and a run resumed at epoch k sees the orders the uninterrupted run
    saw. (Keras' own `shuffle=True` under `set_random_seed` repeats one order every epoch.)"""
    return np.random.default_rng((seed, epoch, ORDER_STREAM)).permutation(n)


class EpochBatches(keras.utils.PyDataset):
    """The fit part as batches, in the order `epoch_order` gives the epoch that `start_epoch`
    named. Each batch is gathered from the uint8 images when `fit` asks for it (32 images at a
    time, no copy of the whole set); one thread, in order, so the order is the one drawn."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
        super().__init__(workers=1, use_multiprocessing=False)
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.order = epoch_order(seed, 0, len(x))

    def start_epoch(self, epoch: int) -> None:
        self.order = epoch_order(self.seed, epoch, len(self.x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.x[rows], self.y[rows]


class EpochStart(keras.callbacks.Callback):
    """At the start of every epoch: the batches take that epoch's order, and every random op of
    the model (Dropout's masks, any SeedGenerator) restarts from a state drawn from (seed, epoch).
    A `.keras` checkpoint holds no generator state, so without this a resumed run would replay
    its first epochs' masks; with it, epoch k is the same whether the run was interrupted or not."""

    def __init__(self, batches: EpochBatches, seed: int):
        super().__init__()
        self.batches, self.seed = batches, seed

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.batches.start_epoch(epoch)
        reseed_random_ops(self.model, self.seed, epoch)


def reseed_random_ops(model: keras.Model, seed: int, epoch: int) -> None:
    """Every SeedGenerator state of `model` set from (seed, epoch, its position in the model)."""
    states = [v for v in model.variables if v.name == "seed_generator_state"]
    draws = np.random.default_rng((seed, epoch, RANDOM_OPS_STREAM)).integers(0, 2**31 - 1,
                                                                          len(states))
    for state, draw in zip(states, draws, strict=True):
        state.assign(np.array([draw, 0], dtype=state.dtype))
