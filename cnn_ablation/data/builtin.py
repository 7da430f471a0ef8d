"""The built-in datasets: Keras' loaders (with a download timeout and where to put the files
offline), Debian's Fashion-MNIST (IDX files), and the synthetic set made on the fly."""

from __future__ import annotations

import gzip
import socket
import struct
from pathlib import Path

import numpy as np

from cnn_ablation.data.arrays import Dataset, DatasetInfo, DatasetUnavailable, aligned_empty
from cnn_ablation.settings import settings

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


DOWNLOAD_TIMEOUT_S = 20  # a Keras download that cannot connect gives up instead of hanging


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


BUILTIN_INFO = {
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), CIFAR10_CLASSES, 50_000, 10_000),
    "cifar100": DatasetInfo("cifar100", (32, 32, 3), tuple(f"class_{i}" for i in range(100)),
                            50_000, 10_000),
    "mnist": DatasetInfo("mnist", (28, 28, 1), tuple(str(i) for i in range(10)), 60_000, 10_000),
    "fashion_mnist": DatasetInfo("fashion_mnist", (28, 28, 1), FASHION_CLASSES, 60_000, 10_000),
}


SYNTHETIC_TRAIN = 1000  # `synthetic` alone: small enough for a 1-epoch test run in seconds


def keras_cache_files(name: str) -> list[Path]:
    d = settings().keras_datasets
    return {
        "cifar10": [d / "cifar-10-batches-py-target_archive",
                    d / "cifar-10-batches-py-target" / "cifar-10-batches-py" / "test_batch"],
        "cifar100": [d / "cifar-100-python-target_archive",
                     d / "cifar-100-python-target" / "cifar-100-python" / "test"],
        "mnist": [d / "mnist.npz"],
        "fashion_mnist": [d / "fashion-mnist" / IDX_FILES[3]],
    }.get(name, [])


def where_files_go(name: str) -> str:
    d = settings().keras_datasets
    where = {
        "cifar10": f"Offline: put cifar-10-python.tar.gz at {d}/cifar-10-batches-py-target_archive",
        "cifar100": f"Offline: put cifar-100-python.tar.gz at {d}/cifar-100-python-target_archive",
        "mnist": f"Offline: put mnist.npz at {d}/mnist.npz",
        "fashion_mnist": f"Offline: apt-get install dataset-fashion-mnist (files in "
                         f"{DEBIAN_FASHION_MNIST}), or put the four .gz files in {d}/fashion-mnist/",
    }
    return where[name]


def load_builtin(name: str):
    debian = all((DEBIAN_FASHION_MNIST / f).exists() for f in IDX_FILES)
    if name == "fashion_mnist" and not keras_cache_files(name)[0].exists() and debian:
        return tuple(read_idx(DEBIAN_FASHION_MNIST / f) for f in IDX_FILES)
    from keras import datasets as keras_datasets  # heavy: only when a download/cache read is due

    loader = getattr(keras_datasets, name)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as exc:
        raise DatasetUnavailable(
            f"dataset {name} is not on this machine and could not be downloaded "
            f"({type(exc).__name__}: {exc}). {where_files_go(name)}"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
    if x_train.ndim == 3:  # MNIST-style (n, 28, 28) -> (n, 28, 28, 1)
        x_train, x_test = x_train[..., None], x_test[..., None]
    return x_train, y_train.reshape(-1), x_test, y_test.reshape(-1)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip or plain, as its stored dtype (uint8 here)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values, found {array.size}")
    array = array.reshape(dims)
    return array[..., None] if ndim == 3 else array


def synthetic_dataset(info: DatasetInfo) -> Dataset:
    """Ten classes, each a faint 8x8 patch at its own place and colour, jittered, on strong noise:
    learnable in an epoch or two but not at once, so switches can show an effect."""
    rng = np.random.default_rng(1234)
    n = info.train_size + info.test_size
    labels = rng.integers(0, 10, size=n)
    images = aligned_empty((n, 32, 32, 3))
    for start in range(0, n, 4096):  # in chunks: no second full-size array at any moment
        stop = min(start + 4096, n)
        images[start:stop] = rng.integers(0, 200, size=(stop - start, 32, 32, 3), dtype=np.uint8)
    jitter = rng.integers(-3, 4, size=(n, 2))
    row, col = np.divmod(labels, 4)
    tops = np.clip(3 + 10 * row + jitter[:, 0], 0, 24)
    lefts = np.clip(3 + 7 * col + jitter[:, 1], 0, 24)
    # One vectorised update per (class, position) group instead of a Python loop per image.
    keys = (labels * 32 + tops) * 32 + lefts
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        k, top, left = int(labels[idx[0]]), int(tops[idx[0]]), int(lefts[idx[0]])
        images[idx, top : top + 8, left : left + 8, k % 3] += 55  # noise < 200: never wraps
    cut = info.train_size
    return Dataset(info, images[:cut], labels[:cut], images[cut:], labels[cut:])
