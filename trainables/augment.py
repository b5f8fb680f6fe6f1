"""Batched augmentation and normalisation as tensor ops on the training device.

Every function takes a whole batch (B, C, H, W) and draws per-image randomness from one `torch.Generator`, so a
batch of 256 costs a few tensor ops instead of 256 PIL round trips. Nothing here loops over images in Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

RRC_RATIO = (3 / 4, 4 / 3)  # torchvision RandomResizedCrop's default aspect-ratio range
RRC_TRIES = 10  # torchvision's attempts at a box that fits before it falls back to the whole image


@dataclass(frozen=True)
class Augment:
    """The augmentation part of a trial config (keys `flip`, `crop_padding`, `cutout`, `crop_scale`)."""

    flip: bool = True  # random horizontal flip, p = 0.5
    crop_padding: int = 4  # random crop of the original size from the image zero-padded by this many pixels
    cutout: int = 0  # side of a square zeroed at a random centre (after normalisation), 0 = off
    crop_scale: float = 0.0  # RandomResizedCrop: smallest area fraction of the crop (torchvision: 0.08), 0 = off

    @classmethod
    def from_config(cls, config: dict) -> Augment:
        return cls(
            flip=bool(config.get("flip", cls.flip)),
            crop_padding=int(config.get("crop_padding", cls.crop_padding)),
            cutout=int(config.get("cutout", cls.cutout)),
            crop_scale=float(config.get("crop_scale", cls.crop_scale)),
        )


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop of the original size out of the zero-padded batch (torchvision RandomCrop(padding)).

    Done as a vertical then a horizontal shift, each as 2 * padding + 1 masked slice copies (airbench's way):
    memory-bound copies instead of a gather with a computed index per pixel (5x faster on a CPU).
    """
    if padding <= 0:
        return x
    b, _, h, w = x.shape
    shifts = torch.randint(-padding, padding + 1, (2, b), device=x.device, generator=generator)
    for axis, size, shift in ((2, h, shifts[0]), (3, w, shifts[1])):
        out = torch.zeros_like(x)  # rows/columns shifted in from outside the image are the zero padding
        for s in range(-padding, padding + 1):
            m = shift == s  # out[r] = x[r + s]
            src = slice(max(s, 0), size + min(s, 0))
            dst = slice(max(-s, 0), size - max(s, 0))
            if axis == 2:
                out[m, :, dst] = x[m, :, src]
            else:
                out[m, :, :, dst] = x[m, :, :, src]
        x = out
    return x


def cutout(
    x: torch.Tensor, size: int, generator: torch.Generator | None = None, fill: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Fill a size x size square (clipped at the border) at a random centre of each image (DeVries & Taylor 2017).

    `fill`: 0 for normalised images (= the mean); for uint8 images a (1, C, 1, 1) tensor of the channel means."""
    if size <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device, generator=generator)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device, generator=generator)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    half = size // 2
    inside = (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)
    if isinstance(fill, torch.Tensor):
        return torch.where(inside[:, None], fill.to(x.dtype), x)
    return x.masked_fill(inside[:, None], fill)


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = RRC_RATIO,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop for a float batch: per image a box of area fraction ~ U(scale) and
    log-uniform aspect ratio, resampled bilinearly to size x size by one grid_sample for the whole batch.

    Box sampling follows torchvision (10 tries per image, first box that fits, else the whole image, which is
    torchvision's fallback for square images); boxes are continuous rather than whole pixels, which only matters
    when the crop is not upsampled.
    """
    b, c, h, w = x.shape
    dev = x.device
    area = torch.empty(b, RRC_TRIES, device=dev).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(b, RRC_TRIES, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    # box sides as fractions of the image sides: (box w * box h) = area * h * w, box w / box h = r
    fw = torch.sqrt(area * (h / w) * log_r.exp())
    fh = torch.sqrt(area * (w / h) / log_r.exp())
    fits = (fw <= 1) & (fh <= 1)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # index of the first try that fits (0 if none does)
    found = fits.any(1)
    fw = torch.where(found, fw.gather(1, first).squeeze(1), 1.0)
    fh = torch.where(found, fh.gather(1, first).squeeze(1), 1.0)
    # box centre in normalised [-1, 1] coordinates, uniform over the positions that keep the box inside the image
    shift = torch.rand(b, 2, device=dev, generator=generator) * 2 - 1
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = fw, fh
    theta[:, 0, 2], theta[:, 1, 2] = (1 - fw) * shift[:, 0], (1 - fh) * shift[:, 1]
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    # "border" clamps like F.interpolate does at the edges: with scale (1, 1) this equals resize().
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a float batch to size x size (evaluation's counterpart of random_resized_crop)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])


def normalize(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float, per-channel standardised. `mean`/`std` are (1, C, 1, 1) tensors in [0, 1] units."""
    return (x_uint8.float() / 255.0 - mean) / std


def augment_epoch(
    x_uint8: torch.Tensor,
    order: torch.Tensor,
    augment: Augment,
    mean: torch.Tensor,
    generator: torch.Generator | None = None,
    chunk: int = 8192,
) -> torch.Tensor:
    """The whole epoch's images in `order`, cropped, flipped and cut out, as one uint8 tensor on x's device.

    Once per epoch over chunks of thousands of images, so the per-call cost of these ops is paid ~6 times per
    epoch rather than per batch, and batches become contiguous slices (no gather per step). Cutout fills with the
    channel means (`mean`, [0, 1] units), which normalise to 0: the same as cutting out after normalising.
    RandomResizedCrop stays per batch (`prepare_batch`), since it resamples to the model's input size.
    """
    out = torch.empty((len(order), *x_uint8.shape[1:]), dtype=x_uint8.dtype, device=x_uint8.device)
    fill = (mean.reshape(1, -1, 1, 1) * 255).round().to(torch.uint8)
    for i in range(0, len(order), chunk):
        xc = x_uint8[order[i : i + chunk]]
        if augment.crop_padding:
            xc = random_crop(xc, augment.crop_padding, generator)
        if augment.flip:
            xc = random_flip(xc, generator)
        if augment.cutout:
            xc = cutout(xc, augment.cutout, generator, fill)
        out[i : i + chunk] = xc
    return out


def prepare_batch(
    x_uint8: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
    size: int | None = None,
) -> torch.Tensor:
    """The one path from stored uint8 images to model input; `augment=None` for evaluation.

    `size`: side the model wants (pretrained models); the stored images are resized per batch, never in storage.
    """
    if augment is not None:
        # Geometry on uint8 (4x less memory traffic than float), cutout after normalising so it zeroes to the mean.
        if augment.crop_padding:
            x_uint8 = random_crop(x_uint8, augment.crop_padding, generator)
        if augment.flip:
            x_uint8 = random_flip(x_uint8, generator)
    # Normalise before resampling: both are linear per channel, and the stored size has fewer pixels.
    x = normalize(x_uint8, mean, std)
    if augment is not None and augment.crop_scale:
        x = random_resized_crop(x, size or x.shape[-1], (augment.crop_scale, 1.0), generator=generator)
    elif size and size != x.shape[-1]:
        x = resize(x, size)
    if augment is not None and augment.cutout:
        x = cutout(x, augment.cutout, generator)
    return x
