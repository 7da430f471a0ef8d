"""Folder datasets (`folder:<path>` with `train/<class>/*` and `test/<class>/*`): the scan that
finds classes and checks every image once (size limits, decompression bombs, corrupt files), the
digest that names the folder's exact contents, and the loader that resizes to the model input."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISREG

import numpy as np

from cnn_ablation.data.arrays import Dataset, DatasetInfo, DatasetUnavailable
from cnn_ablation.settings import settings

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


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


def _image_facts(root: Path, files: list[Path], max_side: int) -> tuple[str, Facts]:
    """The files' digest (`_digest`), and their sizes and whether any has colour, each image
    checked (see `_check_images`) once per process as long as no file is added, removed or
    changed (name, size, mtime)."""
    key, digest = (str(root), max_side), _digest(files)
    known = _checked.get(key)
    if known is not None and known[0] == digest:
        return digest, known[1]
    facts = _check_images(files, max_side)
    _checked[key] = (digest, facts)
    return digest, facts


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


def allowed_area(root: Path) -> list[Path]:
    """Where a folder dataset's files may lie, symlinks resolved: the data roots
    (ABLATION_DATA_ROOTS) that hold the folder, or, for a folder outside them (named on the
    command line by the machine's operator), the folder itself."""
    real = root.resolve()
    holding = [r.resolve() for r in settings().data_roots if real.is_relative_to(r.resolve())]
    return holding or [real]


def _check_inside(root: Path, files: list[Path]) -> None:
    """Refuse a dataset whose files lead (through symlinks) outside `allowed_area`: a folder
    accepted under a data root must not read what lies beyond it."""
    area = allowed_area(root)
    for path in files:
        real = path.resolve()
        if not any(real.is_relative_to(a) for a in area):
            raise DatasetUnavailable(
                f"folder dataset {_shown(root)}: {_shown(path.relative_to(root))} leads outside "
                f"{', '.join(_shown(a) for a in area)} (a symlink); only files under it are read")


def folder_scan(root: Path, image_size):
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
    _check_inside(root, files)
    digest, (sizes, color) = _image_facts(root, files, settings().max_image_side)
    h, w = image_size or collections.Counter(dict(sizes)).most_common(1)[0][0]
    info = DatasetInfo(f"folder:{root}", (h, w, 3 if color else 1), classes,
                       sum(map(len, train.values())), sum(map(len, test.values())), digest)
    return info, train, test


def load_folder(root: Path, info: DatasetInfo) -> Dataset:
    from PIL import Image

    _, train, test = folder_scan(root, info.shape[:2])
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
