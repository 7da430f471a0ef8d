import gzip
import struct
import time

import numpy as np
import pytest
from PIL import Image

from cnn_ablation.config import ConfigError, RunConfig
from cnn_ablation.data import datasets
from cnn_ablation.data.arrays import DatasetUnavailable
from cnn_ablation.data.builtin import DEBIAN_FASHION_MNIST, IDX_FILES, read_idx


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_in_the_standard_format_are_read_as_uint8(tmp_path):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    write_idx(tmp_path / "img.gz", images)
    write_idx(tmp_path / "lab.gz", labels)
    got = read_idx(tmp_path / "img.gz")
    assert got.dtype == np.uint8 and got.shape == (3, 4, 5, 1)
    assert np.array_equal(got[..., 0], images)
    assert np.array_equal(read_idx(tmp_path / "lab.gz"), labels)


def test_idx_reader_refuses_a_truncated_file(tmp_path):
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", 10) + b"\x01\x02")
    with pytest.raises(ValueError, match="expected 10 values"):
        read_idx(tmp_path / "bad.gz")


def make_folder(root, sizes):
    for split in ("train", "test"):
        for label, colour in (("cat", (200, 20, 20)), ("dog", (20, 20, 200))):
            d = root / split / label
            d.mkdir(parents=True)
            for i, size in enumerate(sizes):
                Image.new("RGB", size, colour).save(d / f"{i}.png")


def test_folder_dataset_resizes_mixed_sizes_to_the_most_common(home):
    root = home / "pets"
    make_folder(root, [(20, 10), (20, 10), (8, 8)])  # PIL sizes are (width, height)
    name = f"folder:{root}"
    info = datasets.dataset_info(name)
    assert info.shape == (10, 20, 3) and info.class_names == ("cat", "dog")
    data = datasets.load(name, info.shape[:2])
    assert data.x_train.shape == (6, 10, 20, 3) and data.x_train.dtype == np.uint8
    assert sorted(data.y_train.tolist()) == [0, 0, 0, 1, 1, 1]
    assert data.x_train[data.y_train == 1][..., 2].min() > 150  # dogs stayed blue after resize


def test_folder_image_size_is_stated_in_the_run_config(home):
    root = home / "pets"
    make_folder(root, [(20, 10), (8, 8), (8, 8)])
    resolved = datasets.resolve(RunConfig(dataset=f"folder:{root}", batch_size=1))
    assert resolved.image_size == (8, 8)


def test_missing_folder_says_where_the_images_go(home):
    start = time.monotonic()
    with pytest.raises(DatasetUnavailable, match="train/<class>/"):
        datasets.dataset_info(f"folder:{home}/nothing")
    assert datasets.availability(f"folder:{home}/nothing").state == "missing"
    assert time.monotonic() - start < 5


def test_uncached_keras_dataset_is_reported_with_where_the_file_goes(home, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(home / "keras"))
    state = datasets.availability("mnist")
    assert state.state == "needs download"
    assert str(home / "keras" / "datasets" / "mnist.npz") in state.detail


def test_synthetic_is_deterministic_uint8_and_sized_by_name():
    a, b = datasets.load("synthetic"), datasets.load("synthetic")
    assert a.x_train.dtype == np.uint8 and a.x_train.shape == (1000, 32, 32, 3)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert set(a.y_train.tolist()) == set(range(10))
    assert datasets.load("synthetic:200").x_train.shape[0] == 200


def test_loaded_dataset_is_cached_as_npy(home):
    root = home / "pets"
    make_folder(root, [(8, 8)])
    first = datasets.load(f"folder:{root}", (8, 8))
    assert list((home / "datasets").glob("folder-*/y_test.npy"))
    again = datasets.load(f"folder:{root}", (8, 8))  # from the cache this time
    assert np.array_equal(first.x_train, again.x_train) and again.x_train.dtype == np.uint8
    assert again.x_train.ctypes.data % 64 == 0  # aligned: TensorFlow takes it without staging


def test_batch_larger_than_the_data_is_refused():
    with pytest.raises(ConfigError, match="batch_size: 2000 .* 1 to 900"):
        datasets.check_fits(RunConfig(dataset="synthetic", batch_size=2000))


def test_fashion_mnist_from_debian_when_installed(home, monkeypatch):
    if not (DEBIAN_FASHION_MNIST / IDX_FILES[0]).exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
    monkeypatch.setenv("KERAS_HOME", str(home / "keras"))
    data = datasets.load("fashion_mnist")
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    assert data.x_train.dtype == np.uint8 and data.y_train.max() == 9


def test_a_corrupt_image_is_named_and_an_edited_one_is_looked_at_again(home):
    root = home / "pets"
    make_folder(root, [(8, 8), (8, 8)])
    name = f"folder:{root}"
    assert datasets.dataset_info(name).train_size == 4
    bad = root / "test" / "dog" / "1.png"
    bad.write_bytes(bad.read_bytes()[:30])  # truncated after the scan was remembered
    with pytest.raises(DatasetUnavailable, match=r"dog/1\.png: not a readable image"):
        datasets.dataset_info(name)
    assert datasets.availability(name).state == "missing"
    Image.new("RGB", (8, 8)).save(bad)  # mended: usable again
    assert datasets.dataset_info(name).test_size == 4


def test_class_sets_and_sizes_are_checked(home, monkeypatch):
    root = home / "pets"
    make_folder(root, [(8, 8)])
    Image.new("RGB", (8, 8)).save(root / "train" / "cat" / "x.jpg")
    (root / "test" / "fox").mkdir()
    Image.new("RGB", (8, 8)).save(root / "test" / "fox" / "0.png")
    with pytest.raises(DatasetUnavailable, match="same class set.*only in test/: fox"):
        datasets.dataset_info(f"folder:{root}")
    (root / "test" / "fox" / "0.png").unlink()  # an empty class folder is no class
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    (root / "train" / "cat" / "._0.png").write_bytes(b"macOS resource fork")  # hidden: skipped
    assert datasets.dataset_info(f"folder:{root}").class_names == ("cat", "dog")
    monkeypatch.setenv("ABLATION_MAX_IMAGE_SIDE", "7")
    with pytest.raises(DatasetUnavailable, match="8x8 pixels; the largest side allowed is 7"):
        datasets.dataset_info(f"folder:{root}")


def test_a_decompression_bomb_is_refused_before_it_is_decoded(home):
    root = home / "pets"
    make_folder(root, [(8, 8)])
    Image.new("1", (10_000, 10_000)).save(root / "train" / "dog" / "bomb.png")  # PIL only warns
    start = time.monotonic()
    with pytest.raises(DatasetUnavailable, match="bomb.png: too many pixels"):
        datasets.dataset_info(f"folder:{root}")
    assert time.monotonic() - start < 2


def test_checking_a_few_thousand_images_is_quick_and_done_once(home, monkeypatch):
    root = home / "many"
    for split, n in (("train", 1500), ("test", 500)):
        for label in ("a", "b"):
            d = root / split / label
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (i % 256, 0, 0)).save(d / f"{i}.png")
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(path) or real_open(
        path, *a, **k))
    start = time.monotonic()
    info = datasets.dataset_info(f"folder:{root}")
    assert time.monotonic() - start < 10
    assert info.train_size == 3000 and info.test_size == 1000 and len(opened) == 4000
    datasets.dataset_info(f"folder:{root}")  # unchanged files: not opened again
    assert len(opened) == 4000


def test_concurrent_loaders_never_share_a_temporary_file(home, monkeypatch):
    import os

    root = home / "pets"
    make_folder(root, [(8, 8)])
    written = []
    save = np.save

    def spy(path, array):  # still writes: only notes the name
        written.append(path.name)
        save(path, array)

    monkeypatch.setattr(datasets.np, "save", spy)
    for _ in range(2):  # two loads of the same uncached dataset
        datasets.load(f"folder:{root}", (8, 8))
        for cached in (home / "datasets").glob("folder-*/*.npy"):
            cached.unlink()
    assert len(written) == 8 and len(set(written)) == 8
    assert all(f".{os.getpid()}-" in name and name.endswith(".tmp.npy") for name in written)
    datasets.load(f"folder:{root}", (8, 8))
    assert not list((home / "datasets").glob("folder-*/*.tmp.npy"))


def test_a_limit_beyond_the_data_is_refused_naming_the_field_and_the_size(home):
    """`--limit-train 2000` on the 1,000 images of `synthetic` was stored as 2,000 while 900
    images trained; now it is refused before anything is queued."""
    with pytest.raises(ConfigError, match=r"limit_train: 2000 .* from 1 to 1000"):
        datasets.check_fits(RunConfig(dataset="synthetic", limit_train=2000))
    assert datasets.check_fits(RunConfig(dataset="synthetic", limit_train=1000)).train_size == 1000


@pytest.mark.slow
def test_a_folder_edited_after_a_run_trains_its_new_images_and_the_run_says_so(engine, home,
                                                                              make_run):
    """The folder's cache is keyed by its files' digest: after 3 images are added, the next run
    reads them (not the cached 8) and records 11 images and another digest."""
    pytest.importorskip("keras")
    from cnn_ablation.storage.runs import find_run
    from cnn_ablation.training.run import train_run

    root = home / "pets"
    make_folder(root, [(8, 8)] * 4)  # 4 images per class and split: 8 training images
    config = RunConfig(dataset=f"folder:{root}", epochs=1, batch_size=2, val_split=0.0)
    first = make_run(config, "running")
    assert train_run(engine, first) == "completed"
    for i in range(4, 7):
        Image.new("RGB", (8, 8), (200, 20, 20)).save(root / "train" / "cat" / f"{i}.png")
    second = make_run(config, "running")
    assert train_run(engine, second) == "completed"
    before, after = (find_run(engine, run_id).environment["dataset"] for run_id in (first, second))
    assert (before["used_images"], after["used_images"]) == (8, 11)
    from cnn_ablation.settings import settings

    caches = list(settings().dataset_cache.glob("folder-*"))
    assert len(caches) == 1  # the copy of the folder before the edit is gone
    assert (before["train_images"], after["train_images"]) == (8, 11)
    assert before["digest"] and after["digest"] and before["digest"] != after["digest"]


def test_a_symlink_inside_an_allowed_folder_may_not_lead_outside_it(home, tmp_path):
    """A folder under the data roots ($ABLATION_HOME/folders by default) whose class folder is a
    symlink to images elsewhere is refused naming the link; the same images copied in are read."""
    outside = tmp_path / "elsewhere"
    make_folder(outside, [(8, 8)] * 2)
    root = home / "folders" / "pets"
    make_folder(root, [(8, 8)] * 2)
    (root / "train" / "dog").rename(root / "dog-kept")
    (root / "train" / "dog").symlink_to(outside / "train" / "dog", target_is_directory=True)
    with pytest.raises(DatasetUnavailable, match=r"train/dog/0.png leads outside .*folders"):
        datasets.dataset_info(f"folder:{root}")
    (root / "train" / "dog").unlink()
    (root / "dog-kept").rename(root / "train" / "dog")
    assert datasets.dataset_info(f"folder:{root}").train_size == 4
    # a link that stays inside is fine
    (root / "train" / "cat" / "0-again.png").symlink_to(root / "train" / "cat" / "0.png")
    assert datasets.dataset_info(f"folder:{root}").train_size == 5
