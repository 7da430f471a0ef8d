"""A dataset as the project holds it: its facts (`DatasetInfo`, known without loading), its
uint8 arrays in 64-byte-aligned buffers, and the error for a dataset that cannot be had."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not here and cannot be had; the message says where they go."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    train_size: int
    test_size: int
    # A folder dataset's files as they are now: sha256 over every image's path, size and
    # modification time (folders.py). Any image added, removed or rewritten changes it, so the
    # cache it keys never serves old arrays, and a run records exactly which files it read.
    digest: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class Dataset:
    info: DatasetInfo
    x_train: np.ndarray  # uint8, (n, h, w, c)
    y_train: np.ndarray  # int labels, (n,)
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Availability:
    state: str  # "ready" | "needs download" | "missing"
    detail: str  # what to do about it, in a sentence


def aligned_empty(shape: tuple[int, ...], dtype=np.uint8, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary: TensorFlow can then use it
    in place through DLPack (training.pipeline.as_tensor) instead of copying it whole; TensorFlow requires
    that alignment of any buffer it reads."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    offset = (-raw.ctypes.data) % align
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def load_npy_aligned(path: Path) -> np.ndarray:
    """`np.load` into an aligned buffer, without a second copy."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(f)
        if fortran_order or dtype.hasobject:
            return np.load(path)
        array = aligned_empty(shape, dtype)
        f.readinto(array.reshape(-1).view(np.uint8).data)
    return array
