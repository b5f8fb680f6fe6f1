import os
import time

import numpy as np
import pytest
from conftest import CLASSES, write_image_folder

from trainables import data as D
from trainables.data import DataError, channel_stats, load_dataset, stratified_split


def test_image_folder_loads_all_images_as_nchw_uint8(image_folder):
    ds = load_dataset(image_folder)
    assert ds.classes == CLASSES
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape[1:] == (3, 32, 32)
    assert len(ds.y_train) + len(ds.y_val) == 60 and len(ds.y_test) == 18
    assert np.bincount(ds.y_test).tolist() == [6, 6, 6]
    # the generated images are red / green / blue by class: decoding kept colour and label together
    dominant = ds.x_test.astype(float).mean(axis=(2, 3)).argmax(1)
    assert (dominant == ds.y_test).mean() > 0.9
    assert "x_test" not in ds.search_arrays()  # the search never sees the test set


def test_other_sizes_are_resized(tmp_path):
    folder = write_image_folder(tmp_path / "big", n_train=4, n_test=2, size=48)
    ds = load_dataset(folder)
    assert ds.x_train.shape[2:] == (32, 32)
    assert load_dataset(folder, image_size=24).x_train.shape[2:] == (24, 24)


def test_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    folder = write_image_folder(tmp_path / "f", n_train=4, n_test=2)
    first = load_dataset(folder)
    monkeypatch.setattr(D, "_decode_folder", lambda *a: pytest.fail("decoded again despite a fresh cache"))
    second = load_dataset(folder)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    # a new image changes the fingerprint: the folder is decoded again
    (folder / "train" / "cat" / "0000.jpg").rename(folder / "train" / "cat" / "extra.jpg")
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        load_dataset(folder)


def test_cifar_batches_through_torchvision(cifar_root):
    ds = load_dataset(cifar_root)
    assert ds.source["kind"] == "cifar10"
    assert ds.classes[0] == "airplane" and len(ds.classes) == 10
    assert len(ds.y_train) + len(ds.y_val) == 150 and len(ds.y_test) == 30
    assert ds.x_train.shape[1:] == (3, 32, 32)


def test_incomplete_cifar_root(cifar_root):
    os.remove(cifar_root / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataError, match="missing data_batch_3"):
        load_dataset(cifar_root)


def test_split_is_stratified_and_fixed_by_seed():
    y = np.repeat(np.arange(10), 5000)
    tr, va = stratified_split(y, 0.1, seed=0)
    assert len(tr) == 45_000 and len(va) == 5_000
    assert np.bincount(y[va]).tolist() == [500] * 10
    assert not set(tr) & set(va)
    tr2, va2 = stratified_split(y, 0.1, seed=0)
    np.testing.assert_array_equal(va, va2)
    _, va3 = stratified_split(y, 0.1, seed=1)
    assert not np.array_equal(va, va3)


def test_split_of_uneven_classes():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    _, va = stratified_split(y, 0.1, seed=0)
    assert np.bincount(y[va]).tolist() == [5, 3, 2]


def test_channel_stats_match_numpy():
    x = np.random.default_rng(0).integers(0, 256, (50, 3, 8, 8), dtype=np.uint8)
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)) / 255, rtol=1e-9)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)) / 255, rtol=1e-9)


def test_missing_dir_offline_fails_fast_with_one_line(tmp_path):
    t = time.time()
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "nothing-here")
    assert time.time() - t < 20
    msg = str(e.value)
    assert "\n" not in msg and "cifar-10-python.tar.gz" in msg and "nothing-here" in msg


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: (d / "notes.txt").write_text("x"), "neither an image folder"),
        (lambda d: (d / "train" / "cat").mkdir(parents=True), "test does not"),
        (lambda d: [(d / s / "cat").mkdir(parents=True) for s in ("train", "test")], "no images"),
    ],
)
def test_bad_folders(tmp_path, make, match):
    make(tmp_path)
    with pytest.raises(DataError, match=match):
        load_dataset(tmp_path)


def test_corrupt_image_is_named(tmp_path):
    folder = write_image_folder(tmp_path / "f", n_train=4, n_test=2)
    (folder / "train" / "dog" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.png"):
        load_dataset(folder)


def test_subset_is_stratified(image_folder):
    ds = load_dataset(image_folder, subset=30)
    assert len(ds.y_train) == 30 and np.bincount(ds.y_train).tolist() == [10, 10, 10]
