"""LR range test (Smith 2017; fastai's lr_find) with the torch-lr-finder package, fed by our on-device batches.

    python run_search.py --model lenet5 --data-dir DIR --lr-find               # plot + suggested lr, no search
    python run_search.py --model lenet5 --data-dir DIR --lr-range-from-finder  # then search lr around it

torch-lr-finder runs the test: the lr grows exponentially from START_LR to END_LR over NUM_ITER training steps,
the loss is smoothed (exponential moving average), and the test stops when the loss exceeds 5x its best. This
module adapts our data path to it (uint8 tensors on the device, batched augmentation and per-batch resize, exactly
as `train_one_epoch` prepares them, through its `TrainDataLoaderIter`), builds the model, optimizer and loss as
`fit` does, and picks the suggestion with fastai's "valley" rule (its lr_find default): the longest stretch over
which the smoothed loss keeps falling, and the lr halfway down it. (The package's own
`plot(suggest_lr=True)` takes the steepest point of the whole curve: on real CIFAR-10 LeNet-5's loss blew up at
lr ~1.5, fell back from the spike without reaching 5x its best, and that fall was "steepest": lr 1.87.)
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import nn
from torch_lr_finder import LRFinder, TrainDataLoaderIter

from .augment import Augment, EpochAugment, epoch_batches
from .models import build_model
from .torch_device import DTYPES, choose_precision
from .torch_loop import input_config, make_optimizer, norm_tensors, to_device_tensor

START_LR, END_LR, NUM_ITER = 1e-7, 10.0, 100
# Like torch-lr-finder's plot, the first 10 points (start-up noise of the average) are not candidates.
SKIP_START = 10
MIN_VALLEY = 3  # points of falling loss needed to suggest anything


class LRFindError(Exception):
    """The test produced no usable suggestion (one line, for the CLI)."""


@dataclass
class LRFindResult:
    suggested_lr: float
    lrs: list[float]
    losses: list[float]  # smoothed training loss at each lr
    stopped_early: bool  # the loss diverged (or turned NaN) before END_LR
    figure: Figure  # loss vs lr (log x), suggestion marked; save with figure.savefig(path)


@dataclass
class OnDeviceBatches:
    """One shuffled epoch of prepared (inputs, labels) batches per iteration, exactly as training's
    (`augment.epoch_batches`); TrainDataLoaderIter restarts it."""

    x: torch.Tensor  # uint8 NCHW training images on the device
    y: torch.Tensor
    batch_size: int
    mean: torch.Tensor
    std: torch.Tensor
    augment: Augment
    size: int | None
    generator: torch.Generator
    channels_last: bool = False  # the trial's memory format (Precision.channels_last)

    def __post_init__(self):
        self.epoch_images = EpochAugment(self.x, self.augment, self.mean)  # padded once, as in `fit`

    def __iter__(self):
        yield from epoch_batches(
            self.epoch_images,
            self.y,
            batch_size=self.batch_size,
            mean=self.mean,
            std=self.std,
            augment=self.augment,
            generator=self.generator,
            size=self.size,
            channels_last=self.channels_last,
        )


def lr_range_test(
    config: dict,
    data: dict,
    *,
    device: torch.device,
    num_iter: int = NUM_ITER,
    start_lr: float = START_LR,
    end_lr: float = END_LR,
) -> LRFindResult:
    """Run the test for `config["model"]` with the config's optimizer, batch size, augmentation and loss on the
    training split of `data` (search_arrays()). One lr for all parameters (backbone_lr_mult and freeze_epochs are
    left out: the sweep moves every param group to the same end_lr, which would break their ratio)."""
    torch.manual_seed(int(config.get("seed", 0)))
    x = to_device_tensor(data["x_train"], device)
    y = to_device_tensor(data["y_train"], device)
    model = build_model(config["model"], len(data["classes"]), **{**config, "input_size": data["x_train"].shape[-1]})
    model = model.to(device)
    precision = choose_precision(device, config.get("precision"))
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean, std, size = input_config(model, *norm_tensors(data["mean"], data["std"], device))
    optimizer = make_optimizer({**config, "lr": start_lr}, model.parameters())
    criterion = nn.CrossEntropyLoss(label_smoothing=float(config.get("label_smoothing", 0.0)))
    generator = torch.Generator(device=device)
    generator.manual_seed(int(config.get("seed", 0)))
    batches = OnDeviceBatches(
        x,
        y,
        int(config["batch_size"]),
        mean,
        std,
        Augment.from_config(config),
        size,
        generator,
        precision.channels_last,
    )
    amp = {}
    if precision.name != "fp32":  # the trial's autocast: bf16 on sm80+, fp16 with loss scaling on older GPUs
        amp = dict(
            amp_backend="torch",
            amp_config={"device_type": device.type, "dtype": DTYPES[precision.name]},
            grad_scaler=precision.grad_scaler(),
        )
    finder = LRFinder(model, optimizer, criterion, device=device, **amp)
    with contextlib.redirect_stdout(io.StringIO()):  # its prints ("Stopping early", hints); we report ourselves
        finder.range_test(TrainDataLoaderIter(batches), start_lr=start_lr, end_lr=end_lr, num_iter=num_iter)
    return _suggest(finder, num_iter, config)


def valley(losses: list[float]) -> tuple[int, int, int]:
    """fastai's `valley` suggestion: (start, end, suggested index) of the longest decreasing run of the loss, where
    the run is the longest strictly decreasing subsequence ending at `end` and the suggestion sits halfway along
    (fastai: start + int(len / 3) + int(len / 6))."""
    n = len(losses)
    run = [1] * n  # run[i]: longest strictly decreasing subsequence ending at i
    end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[end]:
            end = i
    start = end - run[end] + 1
    third = (end - start) / 3
    return start, end, start + int(third) + int(third / 2)


def _suggest(finder: LRFinder, num_iter: int, config: dict) -> LRFindResult:
    # A NaN loss never exceeds the divergence threshold, so torch-lr-finder keeps going: cut the history there.
    lrs, losses = finder.history["lr"], finder.history["loss"]
    n = next((i for i, v in enumerate(losses) if not math.isfinite(v)), len(losses))
    lrs, losses = lrs[:n], losses[:n]
    skip = min(SKIP_START, n // 4)
    start, end, best = (skip + i for i in valley(losses[skip:])) if n > skip else (0, 0, 0)
    if end - start + 1 < MIN_VALLEY:
        raise LRFindError(
            f"the LR range test's loss did not decrease ({n} steps from lr {finder.history['lr'][0]:.1e}), too early "
            "to suggest an lr; lower the start lr or check the data"
        )
    lr = float(lrs[best])
    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.subplots()
    ax.plot(lrs, losses)
    ax.axvspan(lrs[start], lrs[end], color="grey", alpha=0.15, label="longest fall of the loss")
    ax.scatter([lr], [losses[best]], s=60, color="red", zorder=3, label=f"suggested lr {lr:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (smoothed)")
    ax.legend(fontsize=8)
    size = f", {config['resolution']}px" if "resolution" in config else ""
    ax.set_title(
        f"LR range test: {config['model']}, {config.get('optimizer', 'adam')}, batch {config['batch_size']}{size}",
        fontsize=9,
    )
    return LRFindResult(lr, lrs, losses, n < num_iter, figure)


def centred_lr_range(suggested: float) -> tuple[float, float]:
    """The search's lr range from a suggestion: a decade below it to 3x above (log-uniform). The suggestion sits
    mid-fall of a 100-step test; a full run with a decaying schedule can prefer much less, while the loss minimum
    (on CIFAR-10 LeNet-5, ~8x above the suggestion) is where training starts to go unstable."""
    return suggested / 10, suggested * 3
