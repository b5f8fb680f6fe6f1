"""Tiny data made by the tests themselves: an image folder and a cifar-10-batches-py root. No real data needed."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ["cat", "dog", "ship"]


def lenet_config(**changes) -> dict:
    """A LeNet5 trial config that trains in seconds on the tiny folders here (Adam, cosine, flips and crops)."""
    base = dict(model="lenet5", lr=3e-3, batch_size=16, max_epochs=2, optimizer="adam", schedule="cosine", flip=True,
                crop_padding=2, cutout=0, dropout=0.0, label_smoothing=0.0, seed=0)  # fmt: skip
    return {**base, **changes}


def class_images(label: int, n: int, size: int, rng) -> np.ndarray:
    """HWC uint8 images whose colour depends on the class, so a model can learn them in a few steps."""
    base = np.zeros((n, size, size, 3), dtype=np.float32)
    base[..., label % 3] = 180
    noise = rng.normal(0, 40, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_image_folder(root: Path, n_train: int = 20, n_test: int = 6, size: int = 32, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for label, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(class_images(label, n, size, rng)):
                # mixed formats: PNG, and JPEG for every third image
                Image.fromarray(img).save(d / (f"{i:04d}.jpg" if i % 3 == 0 else f"{i:04d}.png"))
    return root


def write_cifar_batches(root: Path, per_batch: int = 30, seed: int = 0) -> Path:
    """The layout torchvision's CIFAR10 reads: 5 data batches, a test batch and batches.meta (10 classes)."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def batch(n):
        labels = [int(i % 10) for i in range(n)]
        imgs = np.concatenate([class_images(lab, 1, 32, rng) for lab in labels])  # NHWC
        return {"data": imgs.transpose(0, 3, 1, 2).reshape(n, -1), "labels": labels}

    for i in range(1, 6):
        with open(d / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_batch), f)
    with open(d / "test_batch", "wb") as f:
        pickle.dump(batch(per_batch), f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    return root
