"""ResNet-18 with torchvision's ImageNet weights (IMAGENET1K_V1) and a new head, fine-tuned at `resolution`.

Everything about the weights comes from torchvision's weights API: the URL and file name (hence the hub-cache path),
the 1000 ImageNet categories (the original head's size, checked against the file) and the mean/std of its
preprocessing transforms. The model carries them as timm does, in `model.pretrained_cfg` (input_size, mean, std,
classifier): the training loop reads it to resize batches on the device to `resolution`, to normalise with
ImageNet statistics instead of the data set's, and to find the head for `freeze_epochs` / `backbone_lr_mult`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torchvision.models import ResNet18_Weights
from torchvision.models import resnet18 as tv_resnet18

from .weights import ensure_available, load_state_dict

WEIGHTS = ResNet18_Weights.IMAGENET1K_V1
NAME = "torchvision's resnet18"


def imagenet_resnet18() -> nn.Module:
    """torchvision's resnet18 with the head its ImageNet weights were trained with (1000 categories)."""
    return tv_resnet18(weights=None, num_classes=len(WEIGHTS.meta["categories"]))


def resnet18_pretrained(
    num_classes: int = 10, resolution: int = 224, weights_path: str | None = None, load_weights: bool = True
) -> nn.Module:
    """ImageNet-pretrained backbone (from `weights_path` or the hub cache) + a new Linear(512, num_classes) head.

    `resolution` is the side the training loop resizes every batch to (224 = the weights' own crop size).
    `load_weights=False` builds the architecture only, for loading a fine-tuned state dict (report.py).
    """
    model = imagenet_resnet18()
    if load_weights:
        model.load_state_dict(load_state_dict(WEIGHTS, weights_path))  # strict: every backbone tensor from the file
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    preprocessing = WEIGHTS.transforms()
    model.pretrained_cfg = {
        "input_size": (3, int(resolution), int(resolution)),
        "mean": tuple(preprocessing.mean),
        "std": tuple(preprocessing.std),
        "classifier": "fc",
    }
    return model


def check_weights(weights_path: str | None = None) -> Path:
    """Run by run_search.py before Ray starts: the file exists here (downloaded if online) and is a resnet18."""
    return ensure_available(WEIGHTS, imagenet_resnet18, NAME, weights_path)
