"""Batched augmentation and normalisation as tensor ops on the training device.

Every function takes a whole batch (B, C, H, W) and draws per-image randomness from one `torch.Generator`, so a
batch of 256 costs a few tensor ops instead of 256 PIL round trips. Nothing here loops over images in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """The augmentation part of a trial config (keys `flip`, `crop_padding`, `cutout`)."""

    flip: bool = True  # random horizontal flip, p = 0.5
    crop_padding: int = 4  # random crop of the original size from the image zero-padded by this many pixels
    cutout: int = 0  # side of a square zeroed at a random centre (after normalisation), 0 = off

    @classmethod
    def from_config(cls, config: dict) -> Augment:
        return cls(
            flip=bool(config.get("flip", cls.flip)),
            crop_padding=int(config.get("crop_padding", cls.crop_padding)),
            cutout=int(config.get("cutout", cls.cutout)),
        )


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop of the original size out of the zero-padded batch (torchvision RandomCrop(padding))."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]  # (B, 1, 1, W)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a size x size square (clipped at the border) at a random centre of each image (DeVries & Taylor 2017)."""
    if size <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device, generator=generator)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device, generator=generator)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    half = size // 2
    inside = (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)
    return x.masked_fill(inside[:, None], 0.0)


def normalize(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float, per-channel standardised. `mean`/`std` are (1, C, 1, 1) tensors in [0, 1] units."""
    return (x_uint8.float() / 255.0 - mean) / std


def prepare_batch(
    x_uint8: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The one path from stored uint8 images to model input; `augment=None` for evaluation."""
    if augment is not None:
        # Geometry on uint8 (4x less memory traffic than float), cutout after normalising so it zeroes to the mean.
        if augment.crop_padding:
            x_uint8 = random_crop(x_uint8, augment.crop_padding, generator)
        if augment.flip:
            x_uint8 = random_flip(x_uint8, generator)
    x = normalize(x_uint8, mean, std)
    if augment is not None and augment.cutout:
        x = cutout(x, augment.cutout, generator)
    return x
