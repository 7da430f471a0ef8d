"""Dataset names -> uint8 image arrays and class names, from offline sources when possible.

Names: `cifar10`, `cifar100`, `mnist`, `fashion_mnist` (Keras loaders and their cache; Fashion-MNIST
also from Debian's `dataset-fashion-mnist`: `builtin`), `folder:<path>` (`train/<class>/*`,
`test/<class>/*`: `folders`), and `synthetic` / `synthetic:N` (deterministic, small, learnable;
for tests and smoke runs).

Images stay uint8 (the model rescales them). A loaded dataset is cached as `.npy` files under
`$ABLATION_HOME/datasets/` so the next run starts fast. Shapes of the built-in datasets are known
without their files, so `summary` and the web app never need to load anything; Keras is imported
only inside the loaders.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

from cnn_ablation.config import ConfigError, RunConfig
from cnn_ablation.data.arrays import (
    Availability,
    Dataset,
    DatasetInfo,
    DatasetUnavailable,
    load_npy_aligned,
)
from cnn_ablation.data.builtin import (
    BUILTIN_INFO,
    DEBIAN_FASHION_MNIST,
    IDX_FILES,
    SYNTHETIC_TRAIN,
    keras_cache_files,
    load_builtin,
    synthetic_dataset,
    where_files_go,
)
from cnn_ablation.data.folders import folder_scan, load_folder
from cnn_ablation.settings import settings


# --- what a dataset is, without loading it -------------------------------------------------------
def dataset_info(name: str, image_size: tuple[int, int] | None = None) -> DatasetInfo:
    if name in BUILTIN_INFO:
        return BUILTIN_INFO[name]
    if name == "synthetic" or name.startswith("synthetic:"):
        n = int(name.split(":", 1)[1]) if ":" in name else SYNTHETIC_TRAIN
        return DatasetInfo(name, (32, 32, 3), tuple(f"pattern_{i}" for i in range(10)),
                           n, max(50, n // 5))
    if name.startswith("folder:"):
        return folder_scan(Path(name.split(":", 1)[1]), image_size)[0]
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
    if any(path.exists() for path in keras_cache_files(name)):
        return Availability("ready", "in the Keras cache")
    if name == "fashion_mnist" and all((DEBIAN_FASHION_MNIST / f).exists() for f in IDX_FILES):
        return Availability("ready", f"Debian package, {DEBIAN_FASHION_MNIST}")
    hint = where_files_go(name)
    return Availability("needs download", f"Keras downloads it on first use (needs internet). {hint}")


def check_fits(config: RunConfig) -> DatasetInfo:
    """Refuse a batch larger than the training images left after limit and validation split."""
    info = dataset_info(config.dataset, config.image_size)
    if config.limit_train is not None and config.limit_train > info.train_size:
        raise ConfigError("limit_train", config.limit_train,
                          f"a whole number from 1 to {info.train_size} (the training images of "
                          f"{config.dataset}), or none for all of them")
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
        return synthetic_dataset(info)
    cache = _cache_dir(name, image_size, info.digest)
    if (cache / "y_test.npy").exists():
        keys = ("x_train", "y_train", "x_test", "y_test")
        arrays = [load_npy_aligned(cache / f"{key}.npy") for key in keys]
        return Dataset(info, *arrays)
    if name.startswith("folder:"):
        data = load_folder(Path(name.split(":", 1)[1]), info)
    else:
        data = Dataset(info, *load_builtin(name))
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
    if name.startswith("folder:"):
        _replace_older_caches(cache, f"{Path(name[7:]).resolve()}|{image_size}")
    return data


def _replace_older_caches(cache: Path, source: str) -> None:
    """A folder's cache names the folder it holds (`source`); caches of the same folder and size
    from before its files changed are removed, so editing a folder never leaves a copy of every
    earlier version behind."""
    (cache / "source").write_text(source)
    for other in cache.parent.glob("folder-*"):
        marker = other / "source"
        if other != cache and marker.exists() and marker.read_text() == source:
            shutil.rmtree(other, ignore_errors=True)


def _cache_dir(name: str, image_size: tuple[int, int] | None = None,
               digest: str | None = None) -> Path:
    """Where a loaded dataset is cached; a folder's cache is keyed by its files' digest too, so
    an image added, removed or rewritten since is never served from an older copy."""
    if name.startswith("folder:"):
        key = hashlib.sha256(f"{Path(name[7:]).resolve()}|{image_size}|{digest}".encode()
                             ).hexdigest()[:12]
        return settings().dataset_cache / f"folder-{key}"
    return settings().dataset_cache / name


