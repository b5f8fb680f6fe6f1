"""The augmentation keys of a trial config and an epoch's batch sizes, shared by the torch and Keras loops (no framework
import)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Augment:
    """`flip`, `crop_padding` and `cutout` mean the same in both frameworks; `crop_scale` (RandomResizedCrop of
    pretrained models) is torch's, `shift` (the original Keras recipe's width/height shift) is Keras'."""

    flip: bool = True  # random horizontal flip, p = 0.5
    crop_padding: int = 4  # random crop of the original size from the image zero-padded by this many pixels
    cutout: int = 0  # side of a square set to the mean at a random centre, 0 = off
    crop_scale: float = 0.0  # RandomResizedCrop: smallest area fraction of the crop (torchvision: 0.08), 0 = off
    # a random translation of up to round(shift x size) pixels, edges repeated (ImageDataGenerator's "nearest")
    shift: float = 0.0

    @classmethod
    def from_config(cls, config: dict) -> Augment:
        return cls(
            flip=bool(config.get("flip", cls.flip)),
            crop_padding=int(config.get("crop_padding", cls.crop_padding)),
            cutout=int(config.get("cutout", cls.cutout)),
            crop_scale=float(config.get("crop_scale", cls.crop_scale)),
            shift=float(config.get("shift", cls.shift)),
        )


def epoch_steps(n: int, batch_size: int) -> int:
    """Batches (optimizer steps) in an epoch of n images: n // batch_size, at least 1."""
    return max(1, n // min(batch_size, n))


def batch_bounds(n: int, steps: int, k: int) -> tuple[int, int]:
    """[start, end) of batch k of `steps` nearly equal batches over n images (sizes differ by at most 1)."""
    return k * n // steps, (k + 1) * n // steps
