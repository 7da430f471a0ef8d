"""Dataset registry: name -> uint8 image arrays and class names, from offline sources when possible.

Names: `cifar10`, `cifar100`, `mnist`, `fashion_mnist` (Keras loaders and their cache; Fashion-MNIST
also from Debian's `dataset-fashion-mnist`), `folder:<path>` (`train/<class>/*`, `test/<class>/*`),
and `synthetic` / `synthetic:N` (deterministic, small, learnable; for tests and smoke runs).

Images stay uint8 (the model rescales them). A loaded dataset is cached as `.npy` files under
`$ABLATION_HOME/datasets/` so the next run starts fast. Shapes of the built-in datasets are known
without their files, so `summary` and the web app never need to load anything; this module imports
Keras only inside the loaders.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import hashlib
import os
import secrets
import socket
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

import numpy as np

from cnn_ablation.config import ConfigError, RunConfig
from cnn_ablation.settings import settings

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DOWNLOAD_TIMEOUT_S = 20  # a Keras download that cannot connect gives up instead of hanging

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not here and cannot be had; the message says where they go."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    train_size: int
    test_size: int

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


BUILTIN_INFO = {
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), CIFAR10_CLASSES, 50_000, 10_000),
    "cifar100": DatasetInfo("cifar100", (32, 32, 3), tuple(f"class_{i}" for i in range(100)),
                            50_000, 10_000),
    "mnist": DatasetInfo("mnist", (28, 28, 1), tuple(str(i) for i in range(10)), 60_000, 10_000),
    "fashion_mnist": DatasetInfo("fashion_mnist", (28, 28, 1), FASHION_CLASSES, 60_000, 10_000),
}
SYNTHETIC_TRAIN = 1000  # `synthetic` alone: small enough for a 1-epoch test run in seconds


def aligned_empty(shape: tuple[int, ...], dtype=np.uint8, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary: TensorFlow can then use it
    in place through DLPack (training.as_tensor) instead of copying it whole; TensorFlow requires
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


# --- what a dataset is, without loading it -------------------------------------------------------
def dataset_info(name: str, image_size: tuple[int, int] | None = None) -> DatasetInfo:
    if name in BUILTIN_INFO:
        return BUILTIN_INFO[name]
    if name == "synthetic" or name.startswith("synthetic:"):
        n = int(name.split(":", 1)[1]) if ":" in name else SYNTHETIC_TRAIN
        return DatasetInfo(name, (32, 32, 3), tuple(f"pattern_{i}" for i in range(10)),
                           n, max(50, n // 5))
    if name.startswith("folder:"):
        return _folder_scan(Path(name.split(":", 1)[1]), image_size)[0]
    raise ConfigError("dataset", name, "cifar10 | cifar100 | mnist | fashion_mnist | synthetic | "
                      "synthetic:N | folder:<path>")


def availability(name: str) -> Availability:
    if name.startswith("synthetic"):
        return Availability("ready", "generated on the fly")
    if name.startswith("folder:"):
        try:
            info = dataset_info(name)
        except DatasetUnavailable as exc:
            return Availability("missing", str(exc))
        return Availability("ready", f"{info.train_size} train / {info.test_size} test images")
    if (_cache_dir(name) / "x_train.npy").exists():
        return Availability("ready", "cached")
    if any(path.exists() for path in _keras_cache_files(name)):
        return Availability("ready", "in the Keras cache")
    if name == "fashion_mnist" and all((DEBIAN_FASHION_MNIST / f).exists() for f in IDX_FILES):
        return Availability("ready", f"Debian package, {DEBIAN_FASHION_MNIST}")
    hint = _where_files_go(name)
    return Availability("needs download", f"Keras downloads it on first use (needs internet). {hint}")


def check_fits(config: RunConfig) -> DatasetInfo:
    """Refuse a batch larger than the training images left after limit and validation split."""
    info = dataset_info(config.dataset, config.image_size)
    n = min(config.limit_train or info.train_size, info.train_size)
    n_fit = n - int(round(n * config.val_split))
    if n_fit < 1:
        raise ConfigError("val_split", config.val_split,
                          f"a fraction that leaves at least 1 of the {n} training images")
    if config.batch_size > n_fit:
        raise ConfigError("batch_size", config.batch_size,
                          f"a whole number from 1 to {n_fit} (the training images of "
                          f"{config.dataset} after limit and validation split)")
    return info


def resolve(config: RunConfig) -> RunConfig:
    """Fill in what the run must state: a folder dataset's image size (most common by default)."""
    if config.dataset.startswith("folder:") and config.image_size is None:
        info = dataset_info(config.dataset)
        return config.with_changes(image_size=info.shape[:2])
    return config


# --- loading ------------------------------------------------------------------------------------
def load(name: str, image_size: tuple[int, int] | None = None) -> Dataset:
    info = dataset_info(name, image_size)
    if name.startswith("synthetic"):
        return _synthetic(info)
    cache = _cache_dir(name, image_size)
    if (cache / "y_test.npy").exists():
        keys = ("x_train", "y_train", "x_test", "y_test")
        arrays = [load_npy_aligned(cache / f"{key}.npy") for key in keys]
        return Dataset(info, *arrays)
    if name.startswith("folder:"):
        data = _load_folder(Path(name.split(":", 1)[1]), info)
    else:
        data = Dataset(info, *_load_builtin(name))
    cache.mkdir(parents=True, exist_ok=True)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        # A name of its own per process and call: two slots loading the same dataset at once
        # never write into one file; the rename is atomic, and both write the same arrays.
        tmp = cache / f"{key}.{os.getpid()}-{secrets.token_hex(6)}.tmp.npy"
        try:
            np.save(tmp, getattr(data, key))
            tmp.replace(cache / f"{key}.npy")  # y_test last: its presence means the cache is whole
        finally:
            tmp.unlink(missing_ok=True)
    return data


def _cache_dir(name: str, image_size: tuple[int, int] | None = None) -> Path:
    if name.startswith("folder:"):
        key = hashlib.sha256(f"{Path(name[7:]).resolve()}|{image_size}".encode()).hexdigest()[:12]
        return settings().dataset_cache / f"folder-{key}"
    return settings().dataset_cache / name


def _keras_cache_files(name: str) -> list[Path]:
    d = settings().keras_datasets
    return {
        "cifar10": [d / "cifar-10-batches-py-target_archive",
                    d / "cifar-10-batches-py-target" / "cifar-10-batches-py" / "test_batch"],
        "cifar100": [d / "cifar-100-python-target_archive",
                     d / "cifar-100-python-target" / "cifar-100-python" / "test"],
        "mnist": [d / "mnist.npz"],
        "fashion_mnist": [d / "fashion-mnist" / IDX_FILES[3]],
    }.get(name, [])


def _where_files_go(name: str) -> str:
    d = settings().keras_datasets
    where = {
        "cifar10": f"Offline: put cifar-10-python.tar.gz at {d}/cifar-10-batches-py-target_archive",
        "cifar100": f"Offline: put cifar-100-python.tar.gz at {d}/cifar-100-python-target_archive",
        "mnist": f"Offline: put mnist.npz at {d}/mnist.npz",
        "fashion_mnist": f"Offline: apt-get install dataset-fashion-mnist (files in "
                         f"{DEBIAN_FASHION_MNIST}), or put the four .gz files in {d}/fashion-mnist/",
    }
    return where[name]


def _load_builtin(name: str):
    debian = all((DEBIAN_FASHION_MNIST / f).exists() for f in IDX_FILES)
    if name == "fashion_mnist" and not _keras_cache_files(name)[0].exists() and debian:
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
            f"({type(exc).__name__}: {exc}). {_where_files_go(name)}"
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


def _synthetic(info: DatasetInfo) -> Dataset:
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


def _shown(path: Path | str) -> str:
    """A path as it may appear in a one-line message: control characters escaped."""
    text = str(path)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _folder_files(root: Path, split: str) -> dict[str, list[Path]]:
    """Class folder -> its image files, by name; hidden folders and files (`.DS_Store`,
    macOS' `._x.jpg`, `.ipynb_checkpoints`) are not part of a dataset."""
    base = root / split
    try:
        if not base.is_dir():
            return {}
        return {
            d.name: sorted(p for p in d.iterdir()
                           if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
            for d in sorted(base.iterdir()) if d.is_dir() and not d.name.startswith(".")
        }
    except OSError as exc:
        raise DatasetUnavailable(f"folder dataset {_shown(root)}: cannot read {_shown(base)} "
                                 f"({exc.strerror or exc})") from exc


@contextlib.contextmanager
def _bombs_are_errors() -> Iterator[None]:
    """PIL only warns between MAX_IMAGE_PIXELS and twice that; here both are refusals."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _image_problem(path: Path, exc: BaseException) -> DatasetUnavailable:
    from PIL import Image

    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return DatasetUnavailable(f"image {_shown(path)}: too many pixels to decode safely, a "
                                  f"possible decompression bomb ({exc})")
    return DatasetUnavailable(f"image {_shown(path)}: not a readable image, corrupt or truncated "
                              f"({type(exc).__name__}: {exc})")


def _check_side(path: Path, width: int, height: int, max_side: int) -> None:
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:  # in case a warning filter let it through
        raise DatasetUnavailable(f"image {_shown(path)}: {width}x{height} pixels is more than "
                                 f"PIL's decompression-bomb limit of {limit:,}")
    if max(width, height) > max_side:
        raise DatasetUnavailable(f"image {_shown(path)}: {width}x{height} pixels; the largest side "
                                 f"allowed is {max_side} (ABLATION_MAX_IMAGE_SIDE)")


Facts = tuple[tuple[tuple[tuple[int, int], int], ...], bool]  # ((h, w), count) per size; colour
_checked: dict[tuple[str, int], tuple[str, Facts]] = {}  # (root, max side) -> (files' digest, facts)


def _image_facts(root: Path, files: list[Path], max_side: int) -> Facts:
    """The sizes of `files` and whether any has colour, each image checked (see `_check_images`)
    once per process as long as no file is added, removed or changed (name, size, mtime)."""
    key, digest = (str(root), max_side), _digest(files)
    known = _checked.get(key)
    if known is not None and known[0] == digest:
        return known[1]
    facts = _check_images(files, max_side)
    _checked[key] = (digest, facts)
    return facts


def _check_images(files: list[Path], max_side: int) -> Facts:
    """((height, width), count) per size and whether any image has colour. Each image is
    checked: its size from the header before anything is decoded (pixel limit and `max_side`),
    then its data (a PNG's checksums; other formats decoded, JPEG at 1/8 scale). Any problem
    raises DatasetUnavailable naming the file."""
    from PIL import Image

    sizes: collections.Counter = collections.Counter()
    color = False
    with _bombs_are_errors():
        for path in files:
            try:
                with Image.open(path) as im:
                    width, height = im.size
                    _check_side(path, width, height, max_side)
                    mode = im.mode
                    if im.format == "PNG":
                        im.verify()  # every chunk's CRC: ten times faster than decoding
                    else:
                        if im.format == "JPEG":
                            im.draft(None, (1, 1))
                        im.load()
            except DatasetUnavailable:
                raise
            except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ...
                raise _image_problem(path, exc) from exc
            sizes[(height, width)] += 1
            color = color or mode not in ("L", "1", "I;16", "I")
    return tuple(sizes.items()), color


def _digest(files: list[Path]) -> str:
    """What identifies this list of files and their contents cheaply: names, sizes, mtimes.
    Refuses anything but regular files (a pipe named x.png would block the reader)."""
    digest = hashlib.sha256()
    for path in files:
        try:
            stat = path.stat()
        except OSError as exc:
            raise DatasetUnavailable(f"image {_shown(path)}: {exc.strerror or exc}") from exc
        if not S_ISREG(stat.st_mode):
            raise DatasetUnavailable(f"image {_shown(path)}: not a regular file")
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _folder_scan(root: Path, image_size):
    """The folder's DatasetInfo and its files per class and split, or DatasetUnavailable saying
    what is wrong: no images, fewer than 2 classes, classes that differ between train/ and
    test/, or an image that is unreadable, too large or a decompression bomb."""
    train, test = _folder_files(root, "train"), _folder_files(root, "test")
    if not any(train.values()) or not any(test.values()):
        raise DatasetUnavailable(
            f"folder dataset {_shown(root)}: expected images in {_shown(root)}/train/<class>/ and "
            f"{_shown(root)}/test/<class>/ (png, jpg, ...); found none in "
            + ("train" if not any(train.values()) else "test")
        )
    in_train = {name for name, files in train.items() if files}
    in_test = {name for name, files in test.items() if files}
    if in_train != in_test:
        odd = [f"only in {split}/: " + ", ".join(_shown(c) for c in sorted(names))
               for split, names in (("train", in_train - in_test), ("test", in_test - in_train))
               if names]
        raise DatasetUnavailable(f"folder dataset {_shown(root)}: needs the same class set in "
                                 f"train/ and test/ (class folders with images); " + "; ".join(odd))
    classes = tuple(sorted(in_train))
    if len(classes) < 2:
        raise DatasetUnavailable(f"folder dataset {_shown(root)}: needs at least 2 classes (class "
                                 f"folders with images); found 1: {_shown(classes[0])}")
    train = {c: train[c] for c in classes}
    test = {c: test[c] for c in classes}
    files = [path for split in (train, test) for c in classes for path in split[c]]
    sizes, color = _image_facts(root, files, settings().max_image_side)
    h, w = image_size or collections.Counter(dict(sizes)).most_common(1)[0][0]
    info = DatasetInfo(f"folder:{root}", (h, w, 3 if color else 1), classes,
                       sum(map(len, train.values())), sum(map(len, test.values())))
    return info, train, test


def _load_folder(root: Path, info: DatasetInfo) -> Dataset:
    from PIL import Image

    _, train, test = _folder_scan(root, info.shape[:2])
    h, w, c = info.shape

    def read(split_files):
        xs, ys = [], []
        for label, name in enumerate(info.class_names):
            for path in split_files.get(name, []):
                try:
                    with Image.open(path) as opened:
                        im = opened.convert("RGB" if c == 3 else "L")
                except Exception as exc:  # changed since the scan
                    raise _image_problem(path, exc) from exc
                if im.size != (w, h):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                xs.append(np.asarray(im, dtype=np.uint8).reshape(h, w, c))
                ys.append(label)
        return np.stack(xs), np.asarray(ys, dtype=np.int64)

    with _bombs_are_errors():
        return Dataset(info, *read(train), *read(test))
