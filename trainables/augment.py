"""Batched augmentation and normalisation as tensor ops on the training device.

Every function takes a whole batch (B, C, H, W) and draws per-image randomness from one `torch.Generator`, so a
batch of 256 costs a few tensor ops instead of 256 PIL round trips. Nothing here loops over images in Python.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .augment_spec import Augment, batch_bounds, epoch_steps

RRC_RATIO = (3 / 4, 4 / 3)  # torchvision RandomResizedCrop's default aspect-ratio range
RRC_TRIES = 10  # torchvision's attempts at a box that fits before it falls back to the whole image


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop of the original size out of the zero-padded batch (torchvision RandomCrop(padding))."""
    if padding <= 0:
        return x
    idx = torch.arange(x.shape[0], device=x.device)
    return take_windows(F.pad(x, (padding,) * 4), idx, padding, x.shape[-2:], generator)


def take_windows(padded: torch.Tensor, idx: torch.Tensor, padding: int, size, generator=None) -> torch.Tensor:
    """Images `idx` of a zero-padded batch, each cropped back to `size` at its own random offset.

    The crops are a strided view (unfold) of every possible window; one advanced-indexing gather picks image,
    row offset and column offset together, so shuffling and cropping are a single copy of the data.
    """
    h, w = size
    n = len(idx)
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (N, C, 2p+1, 2p+1, H, W), no copy
    offsets = torch.randint(0, 2 * padding + 1, (2, n), device=padded.device, generator=generator)
    return windows[idx, :, offsets[0], offsets[1]]


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
    when the crop is not upsampled. A box larger than the output is antialiased as evaluation's `resize` is
    (`antialiased_crops`), so training and evaluation see the same pixels of the same box.
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
    return antialiased_crops(x, grid, fh * h / size, fw * w / size)


AA_STEP = 1.25  # pre-resize sides are size x AA_STEP^k: less than this much downsampling is left to grid_sample


def antialiased_crops(x: torch.Tensor, grid: torch.Tensor, down_h: torch.Tensor, down_w: torch.Tensor):
    """grid_sample of each image's box (`grid`, normalised coordinates), where `down_h`/`down_w` (source pixels per
    output pixel along each axis) above 1 mean downsampling. grid_sample does not antialias, so those images are
    first resized with antialiasing, as `resize` does, to the side where their box spans about the output's pixels
    (rounded down to a few shared sides, AA_STEP apart, so a batch costs a few resizes, not one per image); the
    normalised grid picks the same box at any resolution. A whole-image box is thus exactly `resize`."""
    size = grid.shape[1]
    sample = dict(mode="bilinear", padding_mode="border", align_corners=False)  # "border": as interpolate's edges
    if bool((down_h < AA_STEP).all() and (down_w < AA_STEP).all()):
        return F.grid_sample(x, grid, **sample)  # no box downsampled much (CIFAR at a pretrained resolution)
    h, w = x.shape[-2:]
    # Level k: pre-resize the axis to size x AA_STEP^k, the smallest such side at which the box (a fraction
    # h / (down x size) of the side) still spans `size` pixels or more: grid_sample then downsamples by less than
    # AA_STEP. k = -1 keeps the stored side: boxes downsampled by less than AA_STEP anyway.
    k_h = torch.ceil(torch.log(h / (down_h * size)) / math.log(AA_STEP) - 1e-6).long()
    k_w = torch.ceil(torch.log(w / (down_w * size)) / math.log(AA_STEP) - 1e-6).long()
    k_h = torch.where(down_h >= AA_STEP, k_h, -1)
    k_w = torch.where(down_w >= AA_STEP, k_w, -1)
    out = torch.empty(x.shape[0], x.shape[1], size, size, dtype=x.dtype, device=x.device)
    keys = torch.stack([k_h, k_w], 1)
    for key in keys.unique(dim=0).tolist():
        idx = (keys == torch.tensor(key, device=keys.device)).all(1).nonzero().squeeze(1)
        side_h = h if key[0] < 0 else min(h, round(size * AA_STEP ** key[0]))
        side_w = w if key[1] < 0 else min(w, round(size * AA_STEP ** key[1]))
        xs = x[idx]
        if (side_h, side_w) != (h, w):
            xs = F.interpolate(xs, size=(side_h, side_w), mode="bilinear", align_corners=False, antialias=True)
        out[idx] = F.grid_sample(xs, grid[idx], **sample)
    return out


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a float batch to size x size (evaluation's counterpart of random_resized_crop)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])


def normalize(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float, per-channel standardised. `mean`/`std` are (1, C, 1, 1) tensors in [0, 1] units."""
    return (x_uint8.float() / 255.0 - mean) / std


class EpochAugment:
    """A trial's training images, zero-padded once for cropping; each call returns one epoch of them, shuffled,
    cropped, flipped and cut out, as one uint8 tensor on the images' device.

    Once per epoch over chunks of thousands of images, so the per-call cost of these ops is paid a few times per
    epoch rather than per batch, and batches become contiguous slices (no gather per step). Shuffle and crop are
    one gather from the padded images. Cutout fills with the channel means (`mean`, [0, 1] units), which
    normalise to 0: the same as cutting out after normalising. RandomResizedCrop stays per batch
    (`prepare_batch`), since it resamples to the model's input size.
    """

    def __init__(self, x_uint8: torch.Tensor, augment: Augment, mean: torch.Tensor, chunk: int = 8192):
        self.augment, self.chunk = augment, chunk
        self.size = tuple(x_uint8.shape[-2:])
        p = augment.crop_padding
        self.source = F.pad(x_uint8, (p,) * 4) if p else x_uint8  # +56% memory, once per trial
        self.fill = (mean.reshape(1, -1, 1, 1) * 255).round().to(torch.uint8)

    def __len__(self) -> int:
        return self.source.shape[0]

    def __call__(self, order: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        aug = self.augment
        out = torch.empty(
            (len(order), self.source.shape[1], *self.size), dtype=self.source.dtype, device=self.source.device
        )
        for i in range(0, len(order), self.chunk):
            idx = order[i : i + self.chunk]
            if aug.crop_padding:
                xc = take_windows(self.source, idx, aug.crop_padding, self.size, generator)
            else:
                xc = self.source[idx]
            if aug.flip:  # in place on the half that flips: cheaper than where(mask, flipped copy, x)
                m = torch.rand(len(idx), device=xc.device, generator=generator) < 0.5
                xc[m] = xc[m].flip(3)
            if aug.cutout:
                xc = cutout(xc, aug.cutout, generator, self.fill)
            out[i : i + len(idx)] = xc
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


def epoch_batches(
    x: EpochAugment,
    y: torch.Tensor,
    *,
    batch_size: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    augment: Augment,
    generator: torch.Generator,
    size: int | None = None,
    channels_last: bool | None = None,
):
    """One epoch of model-ready (inputs, labels) batches: shuffle, augment the whole epoch at once (`x`: crop, flip
    and cutout on uint8, in shuffled order), then per contiguous batch normalise (and resize / random-resized-crop
    for pretrained models). The one shuffle-and-batch path of the training loop and the LR range test.
    `channels_last`: NHWC batches (the Precision's choice; None: on a GPU).

    `epoch_steps(n, batch_size)` batches of nearly equal size that together hold every image once: the n % batch_size
    left over are spread evenly, one per batch (50,000 images at 128: 80 batches of 129, 310 of 128), never a
    short last batch (a batch of 1 would break BatchNorm) and never an image left out of an epoch."""
    n = len(x)
    steps = epoch_steps(n, batch_size)
    perm = torch.randperm(n, device=y.device, generator=generator)
    xs, ys = x(perm, generator), y[perm]
    per_batch = Augment(flip=False, crop_padding=0, cutout=0, crop_scale=augment.crop_scale)
    for k in range(steps):
        i, j = batch_bounds(n, steps, k)
        xb = prepare_batch(xs[i:j], mean, std, per_batch, generator, size)
        if channels_last or (channels_last is None and xb.device.type == "cuda"):
            xb = xb.contiguous(memory_format=torch.channels_last)
        yield xb, ys[i:j]
