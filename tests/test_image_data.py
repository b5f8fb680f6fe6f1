import os
import time
from pathlib import Path

import numpy as np
import pytest
from odd_images import BAD_EXPECTED, ODD_EXPECTED, odd_folder, write_odd_files
from sample_data import CLASSES, write_image_folder

from image_data import cache as D
from image_data import decode as images
from image_data.cache import DataError, channel_stats, load_dataset, skip_summary, stratified_split


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


def test_missing_dir_is_one_line_and_creates_nothing(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "download", lambda self: pytest.fail("a download was started"))
    t = time.time()
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "shared" / "nothing-here")
    assert time.time() - t < 5
    msg = str(e.value)
    assert "\n" not in msg and "does not exist" in msg and "nothing-here" in msg and "train/<class>/" in msg
    assert not (tmp_path / "shared").exists()  # neither the folder nor its parent was created


def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    """--download offline: one line naming the archive, and the folders it made are gone again."""
    from torchvision.datasets import CIFAR10

    def offline(self):
        os.makedirs(self.root, exist_ok=True)
        (Path(self.root) / "cifar-10-python.tar.gz").write_bytes(b"partial")
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(CIFAR10, "download", offline)
    with pytest.raises(DataError, match="could not be downloaded.*name resolution.*cifar-10-python.tar.gz"):
        load_dataset(tmp_path / "new" / "cifar", download=True)
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()  # an existing empty folder is a download target; it is left empty again
    with pytest.raises(DataError, match="could not be downloaded"):
        load_dataset(tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []


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


def test_one_class_and_zero_classes_are_refused(tmp_path):
    one = write_image_folder(tmp_path / "one", n_train=4, n_test=2)
    for split in ("train", "test"):
        for cls in CLASSES[1:]:
            for f in (one / split / cls).iterdir():
                f.unlink()
            (one / split / cls).rmdir()
    with pytest.raises(DataError, match=r"train has one class folder \(cat\); a classifier needs at least 2"):
        load_dataset(one)
    for split in ("train", "test"):
        (tmp_path / "none" / split).mkdir(parents=True)
    with pytest.raises(DataError, match="train has no class folders"):
        load_dataset(tmp_path / "none")


def test_a_subset_smaller_than_the_classes_is_refused_before_decoding(image_folder, monkeypatch):
    monkeypatch.setattr(D, "_decode_folder", lambda *a, **k: pytest.fail("decoded before refusing"))
    with pytest.raises(DataError, match=r"^--subset 2 is fewer training images than the 3 classes"):
        load_dataset(image_folder, subset=2)


def test_a_small_subset_keeps_one_image_per_class_in_train_and_val(image_folder):
    ds = load_dataset(image_folder, subset=3)  # val: a tenth of 3 rounds up to one per class
    assert np.bincount(ds.y_train).tolist() == [1, 1, 1] and np.bincount(ds.y_val).tolist() == [1, 1, 1]


def test_images_in_subfolders_are_not_read_and_said_so(tmp_path):
    """Issue 23.3: train/cat/sub/*.png gave "has no usable images" without saying why."""
    folder = write_image_folder(tmp_path / "f", n_train=4, n_test=2)
    (folder / "train" / "cat" / "sub").mkdir()
    for f in list((folder / "train" / "cat").glob("*.*")):
        f.rename(folder / "train" / "cat" / "sub" / f.name)
    with pytest.raises(DataError) as e:
        load_dataset(folder)
    assert str(e.value).endswith("/train/cat has no usable images (subfolders are not read: sub/; put the images "
                                 "directly in the class folder)")  # fmt: skip
    # a class with images and a subfolder: it loads, and the subfolder is listed as skipped, with its reason
    for f in list((folder / "train" / "cat" / "sub").glob("*.*"))[:2]:
        f.rename(folder / "train" / "cat" / f.name)
    ds = load_dataset(folder)
    assert {"path": "train/cat/sub/", "reason": "subfolder, not read",
            "detail": "subfolders of a class folder are not read"} in ds.skipped  # fmt: skip
    line = skip_summary(ds.skipped, ds.num_files, "full list in experiment.json")
    assert line.splitlines()[0] == "skipped 1 subfolder of class folders (not read); full list in experiment.json"


def test_subset_is_stratified_and_keeps_the_whole_test_set(image_folder):
    ds = load_dataset(image_folder, subset=30)
    assert len(ds.y_train) == 30 and np.bincount(ds.y_train).tolist() == [10, 10, 10]
    assert len(ds.y_test) == 18  # --subset is for the search; the test set is never cut by it
    cut = load_dataset(image_folder, subset=30, test_subset=9)
    assert np.bincount(cut.y_test).tolist() == [3, 3, 3] and cut.source["num_test_full"] == 18


# ---------------------------------------------------------------------------------------------------------------
# real-world folders: bad files skipped (or refused with --strict-data), odd files decoded right, any size


def test_bad_files_are_skipped_and_listed(tmp_path):
    folder = odd_folder(tmp_path / "f")
    ds = load_dataset(folder)
    got = {Path(s["path"]).name: s["reason"] for s in ds.skipped}
    assert got == BAD_EXPECTED
    assert all(s["path"].startswith("train/cat/") for s in ds.skipped)
    n_odd = len(ODD_EXPECTED) + 1  # + the EXIF-rotated JPEG
    assert len(ds.y_train) + len(ds.y_val) == 18 + n_odd and ds.num_files == 18 + 9 + n_odd + len(BAD_EXPECTED)
    line = skip_summary(ds.skipped, ds.num_files, "full list in experiment.json")
    counts, files = line.split("\n")
    assert counts.startswith(f"skipped 8 of {ds.num_files} files (") and len(counts) <= 120 and len(files) <= 120
    assert "3 unreadable" in counts and "4 not images" in counts and "1 too large" in counts
    assert counts.endswith("full list in experiment.json")
    assert files.startswith("  train/cat/.DS_Store (hidden), train/cat/._0001.png (AppleDouble), ") and "..." in files


def test_strict_data_refuses_bad_files_in_one_line(tmp_path):
    folder = odd_folder(tmp_path / "f")
    with pytest.raises(DataError) as e:
        load_dataset(folder, strict=True)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--strict-data: 8 unusable files: ")
    assert "train/cat/truncated.jpg (truncated)" in msg and "train/cat/bomb.png (too large)" in msg


def test_fixing_a_bad_file_decodes_again(tmp_path):
    folder = write_image_folder(tmp_path / "f", n_train=4, n_test=2)
    bad = folder / "train" / "dog" / "9999.png"
    bad.write_bytes(b"")
    assert [s["reason"] for s in load_dataset(folder).skipped] == ["empty"]
    assert [s["reason"] for s in load_dataset(folder).skipped] == ["empty"]  # the cache keeps the skip list
    from PIL import Image

    Image.new("RGB", (32, 32), (0, 180, 0)).save(bad)
    ds = load_dataset(folder)
    assert ds.skipped == [] and len(ds.y_train) + len(ds.y_val) == 13


def test_a_class_left_without_images_is_named(tmp_path):
    folder = write_image_folder(tmp_path / "f", n_train=4, n_test=2)
    for f in (folder / "train" / "ship").iterdir():
        f.write_bytes(b"broken")
    with pytest.raises(DataError, match=r"class folder .*/train/ship has no usable images \(all 4 files skipped"):
        load_dataset(folder)


@pytest.mark.parametrize("name", [*ODD_EXPECTED])
def test_odd_images_become_correct_rgb(tmp_path, name):
    write_odd_files(tmp_path)
    x = images.decode(tmp_path / name, 32)
    assert x.dtype == np.uint8 and x.shape == (3, 32, 32)
    np.testing.assert_allclose(x[:, 16, 16], ODD_EXPECTED[name], atol=3)


def test_exif_orientation_is_applied(tmp_path):
    write_odd_files(tmp_path)
    x = images.decode(tmp_path / "exif_rotated.jpg", 32).astype(int)
    # upright: red on top, blue at the bottom (stored: red left, blue right)
    assert x[0, 2, 16] > 200 and x[2, 2, 16] < 50 and x[2, 29, 16] > 200 and x[0, 29, 16] < 50


def test_wide_images_are_resized_on_the_shorter_side_and_centre_cropped(tmp_path):
    """96 wide x 64 tall at --image-size 64: the middle 64 columns are kept at full scale, 16 are lost each side."""
    from PIL import Image

    for split in ("train", "test"):
        for cls in CLASSES:
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                a = np.zeros((64, 96, 3), np.uint8)
                a[:, :16] = (255, 0, 0)  # edge bands the crop removes
                a[:, 80:] = (0, 0, 255)
                a[:, 16:80, 1] = np.arange(64, dtype=np.uint8)[None, :] * 4  # a horizontal ramp in the kept part
                Image.fromarray(a).save(d / f"{i}.png")
    ds = load_dataset(tmp_path, image_size=64)
    assert ds.x_train.shape[1:] == (3, 64, 64) and ds.x_test.shape[1:] == (3, 64, 64)
    assert ds.source["image_size"] == 64
    img = ds.x_test[0]
    assert img[0].max() == 0 and img[2].max() == 0  # neither edge band (red left, blue right) survived
    np.testing.assert_array_equal(img[1, 10], np.arange(64) * 4)  # the kept middle, unscaled (no squashing)
    # cached per size: 32 is a separate decode, the same crop scaled down
    small = load_dataset(tmp_path, image_size=32)
    assert small.x_train.shape[2:] == (32, 32) and len(list((tmp_path / "cache").glob("folder-*"))) == 2


def test_default_size_follows_the_model(tmp_path):
    folder = write_image_folder(tmp_path / "f", n_train=4, n_test=2, size=80)
    assert load_dataset(folder).x_train.shape[2:] == (32, 32)  # lenet5 / resnet18: CIFAR-sized
    # a model fed 224 px (resnet18_pretrained): stored at the folder's own 80 px, not blown up to 224
    assert load_dataset(folder, model_side=224).x_train.shape[2:] == (80, 80)
    assert load_dataset(folder, model_side=64).x_train.shape[2:] == (64, 64)


def test_cifar_batches_stay_32(cifar_root):
    assert load_dataset(cifar_root, model_side=224).x_train.shape[2:] == (32, 32)
    with pytest.raises(DataError, match="32x32; --image-size is for image folders"):
        load_dataset(cifar_root, image_size=64)


def test_too_big_for_the_object_store_fails_before_decoding(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from search_driver import data as SD

    folder = write_image_folder(tmp_path / "f", n_train=4, n_test=2)
    monkeypatch.setattr(D, "_decode_folder", lambda *a: pytest.fail("decoded before the memory check"))
    monkeypatch.setattr(SD, "object_store_capacity", lambda held: 1_000_000)
    check = SD.object_store_check(SimpleNamespace(address=None))
    with pytest.raises(DataError) as e:
        load_dataset(folder, image_size=224, check=check)
    msg = str(e.value)
    assert msg.startswith("12 train/val images at 224x224 need 1.8 MB (uint8 224x224x3 each) in Ray's object store")
    assert "will hold 1.0 MB" in msg and "--image-size" in msg and "\n" not in msg


def test_object_store_capacity_is_rays_own_default_rule():
    """start_ray gives a local instance this capacity (ray.init(object_store_memory=...)); it is what Ray would have
    chosen (ray/_private/utils.py: resolve_object_store_memory of estimate_available_memory; checked on Ray 2.60)."""
    from ray._private.utils import estimate_available_memory, resolve_object_store_memory

    from search_driver.data import object_store_capacity

    # free memory moves while the suite runs: ours is read before and after Ray's, until the machine holds still
    for _ in range(10):
        before = object_store_capacity(0)
        rays = resolve_object_store_memory(estimate_available_memory())
        after = object_store_capacity(0)
        if abs(after - before) < 0.005 * rays:
            break
        time.sleep(0.5)
    slack = 0.02 * rays + 2e8
    assert min(before, after) - slack < rays < max(before, after) + slack


def test_available_memory_in_a_container_is_rays_count(tmp_path, monkeypatch):
    """In a cgroup (CI's container) Ray counts used memory without the page cache; on 2026-12-07 CI counting it
    made our store 6.7 GB where Ray's was 7.1 GB. Ray's own functions read the same fake cgroup files here
    (ray/_private/utils.py: get_system_memory, get_cgroup_used_memory; checked on Ray 2.60)."""
    from ray._private.utils import get_cgroup_used_memory, get_system_memory

    import search_driver.data as SD

    limit, usage, stat = tmp_path / "memory.max", tmp_path / "memory.current", tmp_path / "memory.stat"
    limit.write_text(f"{16 * 2**30}\n")
    usage.write_text(f"{6 * 2**30}\n")
    stat.write_text(f"anon 1000\nactive_file {2**30}\ninactive_file {2**29}\nfile_mapped 7\n")
    monkeypatch.setattr(SD, "_CGROUPS", ((str(limit), str(usage), str(stat), ""),))
    rays = get_system_memory(str(tmp_path / "no-v1"), str(limit)) - get_cgroup_used_memory(
        str(stat), str(usage), "inactive_file", "active_file"
    )
    assert SD.available_memory() == rays == 16 * 2**30 - (6 * 2**30 - 2**30 - 2**29)


def test_the_model_decides_the_default_side():
    from types import SimpleNamespace

    from search_driver.data import model_side

    def side(model, resolution=None, smoke_test=False):
        return model_side(SimpleNamespace(model=model, resolution=resolution, smoke_test=smoke_test), 32)

    assert side("lenet5") == side("resnet18") == side("keras_resnet18") == 32
    assert side("resnet18_pretrained") == 224  # the largest searched resolution
    assert side("resnet18_pretrained", resolution=96) == 96 and side("resnet18_pretrained", smoke_test=True) == 32
