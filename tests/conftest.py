"""Fixtures: the isolated data cache, a seeded TORCH_HOME, and the tiny data of tests/sample_data.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from sample_data import ROOT, write_cifar_batches, write_image_folder  # noqa: E402,F401
from shared_runs import finished_search


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_TUNE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds an UNTRAINED torchvision resnet18 under the ImageNet weights' file name,
    so resnet18_pretrained loads through its real path with no download (its tests check tensors, not accuracy)."""
    import torch
    from torchvision.models import resnet18

    home = tmp_path_factory.mktemp("torch_home")
    f = home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    f.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet18().state_dict(), f)
    return home


@pytest.fixture(autouse=True)
def _seeded_torch_home(torch_home, monkeypatch):
    """Every test (and the run_search.py subprocesses it starts) sees the seeded cache, never ~/.cache/torch."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture()
def cifar_root(tmp_path) -> Path:
    return write_cifar_batches(tmp_path / "cifar")


@pytest.fixture(scope="session")
def tiny_arrays(tmp_path_factory):
    """search_arrays() of the tiny image folder, as trials get them."""
    from image_data.cache import load_dataset

    folder = write_image_folder(tmp_path_factory.mktemp("arrays"))
    return load_dataset(folder, cache_dir=tmp_path_factory.mktemp("cache")).search_arrays()


@pytest.fixture(scope="session")
def lenet5_smoke(image_folder, tmp_path_factory, torch_home):
    """One finished LeNet5 search (--smoke-test: 2 trials x up to 2 epochs) named "smoke", shared by the tests that
    read it; a test that extends or resumes it works on a copy."""
    return finished_search(tmp_path_factory, "smoke", image_folder, torch_home, "--model", "lenet5")


@pytest.fixture(scope="session")
def keras_smoke(image_folder, tmp_path_factory, torch_home):
    """One finished keras_resnet18 search (--smoke-test, 1 epoch per trial) named "keras", for the Keras loop's end
    to end checks and the report's; nobody changes it."""
    return finished_search(tmp_path_factory, "keras", image_folder, torch_home, "--model", "keras_resnet18",
                           "--max-epochs", 1)  # fmt: skip
