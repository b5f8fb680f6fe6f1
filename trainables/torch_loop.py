"""The torch training loop: used by every search trial and by report.py's retrain (`fit`), through
`trainables/framework.py`'s TorchFramework.

Layers, from the bottom:
- `train_one_epoch` / `evaluate` / `predict`: plain functions with explicit arguments, no Ray, no globals.
- `fit`: epochs of train + validate from a trial config, resumable from a checkpoint dict, reporting through a
  callback. One loop for the search and the report.
"""

from __future__ import annotations

import functools
import math
import os
import random
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from . import metric_names as M
from .augment import Augment, EpochAugment, epoch_batches, epoch_steps, prepare_batch
from .models import build_model
from .torch_device import Precision, choose_precision

CHECKPOINT_FILE = "checkpoint.pt"
SCHEDULES = ("constant", "step", "cosine", "onecycle")
OPTIMIZERS = ("adam", "sgd", "adamw")
CPU_EVAL_BATCH = 1024  # CPU evaluation: no memory cap, and larger batches are a little cheaper per image


def eval_batch_size(device: torch.device, train_batch_size: int) -> int:
    """On a GPU, evaluation batches are the trial's training batch: same inputs, but no gradients, no activations
    kept for backward and no optimizer update, so evaluation never needs more memory than the training step that
    the trial's GPU share (and `--gpus-per-trial auto`'s measurement) already covers. On a CPU: CPU_EVAL_BATCH."""
    return int(train_batch_size) if device.type == "cuda" else max(CPU_EVAL_BATCH, int(train_batch_size))


# ---------------------------------------------------------------------------------------------------------------
# device (the GPU's index, memory cap and autocast dtype live in torch_device.py)


def to_device_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Object-store arrays are read-only numpy views; torch warns about that but we never write to them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array).to(device)


def norm_tensors(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    def as4d(v):
        return torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    return as4d(mean), as4d(std)


def input_config(model: nn.Module, mean: torch.Tensor, std: torch.Tensor):
    """(mean, std, size) to feed `model`. A model carrying timm-style `pretrained_cfg` (pretrained models) gets what
    its weights were trained on, ImageNet statistics at its resolution, whatever the data set's statistics are;
    every other model gets the data set's `mean`/`std` at the stored size (size None: no resize)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        return mean, std, None
    return *norm_tensors(cfg["mean"], cfg["std"], mean.device), int(cfg["input_size"][-1])


def split_head(model: nn.Module) -> tuple[list, list]:
    """(head parameters, backbone parameters) of a model whose `pretrained_cfg["classifier"]` names its head."""
    cfg = getattr(model, "pretrained_cfg", None)
    if not cfg or "classifier" not in cfg:
        raise ValueError("freeze_epochs and backbone_lr_mult need a pretrained model (one with a named head)")
    names = [cfg["classifier"]] if isinstance(cfg["classifier"], str) else cfg["classifier"]  # timm: some have two
    head = [p for name in names for p in model.get_submodule(name).parameters()]
    ids = {id(p) for p in head}
    return head, [p for p in model.parameters() if id(p) not in ids]


def param_groups(model: nn.Module, config: dict):
    """All parameters at `lr`, or (backbone_lr_mult != 1) the head at `lr` and the backbone at lr x mult. The head
    group comes first, so the reported `lr` (param group 0) is the config's lr in both cases."""
    mult = float(config.get("backbone_lr_mult", 1.0))
    if mult == 1.0:
        return model.parameters()
    head, backbone = split_head(model)
    return [{"params": head}, {"params": backbone, "lr": float(config["lr"]) * mult}]


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """freeze_epochs: a frozen backbone gets no gradients (backward stops at the head, Adam skips it). Its BatchNorm
    layers still update their running statistics in train mode, adapting them to the new data's distribution."""
    for p in split_head(model)[1]:
        p.requires_grad_(trainable)


# ---------------------------------------------------------------------------------------------------------------
# optimiser and schedule from a config


def make_optimizer(config: dict, params) -> torch.optim.Optimizer:
    name, lr, wd = config.get("optimizer", "adam"), float(config["lr"]), float(config.get("weight_decay", 0.0))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, weight_decay=wd, momentum=float(config.get("momentum", 0.9)), nesterov=True
        )
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def make_scheduler(config: dict, optimizer, steps_per_epoch: int, max_epochs: int):
    """Every schedule steps once per batch, so `train_one_epoch` treats them alike."""
    name = config.get("schedule", "constant")
    total = max(1, steps_per_epoch * max_epochs)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    if name == "step":  # StepLR(7, 0.1) per epoch, as the original pretrained recipe
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=7 * steps_per_epoch, gamma=0.1)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total)
    raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")


# ---------------------------------------------------------------------------------------------------------------
# one epoch, evaluation


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    x: EpochAugment,
    y: torch.Tensor,
    *,
    batch_size: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    augment: Augment,
    loss_fn: nn.Module,
    generator: torch.Generator,
    device: torch.device,
    size: int | None = None,
    precision: Precision | None = None,
    scaler: torch.amp.GradScaler | None = None,
    max_steps: int | None = None,
    averaged: AveragedModel | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """One pass over the training images `x` (an EpochAugment of the uint8 NCHW images on `device`) and labels
    `y`. Returns train_loss, train_acc, images, seconds.

    `size`: resize every batch to size x size (pretrained models; see `input_config`). `precision`: autocast dtype
    and memory format (default: the device's, `choose_precision`); `scaler`: its GradScaler (fp16 needs one
    enabled). `max_steps`: stop after this many batches (memory probes and benchmarks; None = the whole epoch).
    `averaged`: an EMA of the weights (`averaged_model`), updated after every step. `progress(batches done, batches
    in the epoch)`: called after every batch (it decides itself how often to act)."""
    precision = precision or choose_precision(device)
    scaler = scaler or precision.grad_scaler()
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    start = time.perf_counter()
    batches = epoch_batches(
        x,
        y,
        batch_size=batch_size,
        mean=mean,
        std=std,
        augment=augment,
        generator=generator,
        size=size,
        channels_last=precision.channels_last,
    )
    steps = len(x) // min(batch_size, len(x))
    steps = steps if max_steps is None else min(steps, max_steps)
    for step, (xb, yb) in enumerate(batches):
        if max_steps is not None and step >= max_steps:
            break
        with precision.autocast():
            logits = model(xb)
            loss = loss_fn(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # disabled scaler (bf16, fp32): plain backward and step
        scaler.step(optimizer)  # fp16: skips the step when a gradient overflowed, and lowers the scale
        scaler.update()
        scheduler.step()
        if averaged is not None:
            averaged.update_parameters(model)
        # Accumulate on the device: no .item() per batch, so CUDA never waits for Python.
        loss_sum += loss.detach().float() * len(yb)
        correct += (logits.argmax(1) == yb).sum()
        seen += len(yb)
        if progress is not None:
            progress(step + 1, steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {
        M.TRAIN_LOSS: loss_sum.item() / seen,
        M.TRAIN_ACC: correct.item() / seen,
        "images": seen,
        "seconds": seconds,
    }


class ProbabilityMean(nn.Module):
    """An ensemble: log of the mean of its members' softmax probabilities, a logit vector like `flip_average`'s (its
    softmax is that mean), so evaluation, flip TTA, softmax and export treat it as one model. A member's
    `pretrained_cfg` (the input it was trained on) is the ensemble's: every member is the same config."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        if (cfg := getattr(members[0], "pretrained_cfg", None)) is not None:
            self.pretrained_cfg = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([torch.log_softmax(m(x).float(), 1) for m in self.members])
        return torch.logsumexp(logp, 0) - math.log(len(self.members))


def flip_average(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Flip test-time augmentation: log of the mean of the softmax probabilities of the images `x` (normalised NCHW)
    and of their horizontal mirrors. A logit vector in its own right: its softmax is that mean, so evaluation,
    softmax and export treat it as the model's logits. The one definition report.py and the exported files use."""
    both = torch.stack([torch.log_softmax(model(x).float(), 1), torch.log_softmax(model(x.flip(3)).float(), 1)])
    return torch.logsumexp(both, 0) - math.log(2.0)


@torch.no_grad()
def predict(
    model: nn.Module,
    x: torch.Tensor,
    *,
    mean,
    std,
    device,
    batch_size: int = CPU_EVAL_BATCH,
    precision: Precision | None = None,
    flip_tta: bool = False,
) -> torch.Tensor:
    """Logits (float32, on `device`) for uint8 NCHW images `x`, in eval mode, without augmentation, `batch_size`
    images at a time (a trial passes `eval_batch_size`). `flip_tta`: `flip_average`'s logits instead.

    A pretrained model is fed as in training (`input_config`): resized to its resolution, ImageNet-normalised."""
    model.eval()
    precision = precision or choose_precision(device)
    mean, std, size = input_config(model, mean, std)
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = prepare_batch(x[i : i + batch_size].to(device, non_blocking=True), mean, std, size=size)
        if precision.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with precision.autocast():
            out.append(flip_average(model, xb) if flip_tta else model(xb).float())
    return torch.cat(out)


def evaluate(model, x, y, *, mean, std, device, loss_fn=None, batch_size: int = CPU_EVAL_BATCH, precision=None) -> dict:
    """Plain cross-entropy loss and accuracy (no label smoothing, so val_loss is comparable across trials)."""
    logits = predict(model, x, mean=mean, std=std, device=device, batch_size=batch_size, precision=precision)
    y = y.to(logits.device)
    loss = nn.functional.cross_entropy(logits, y) if loss_fn is None else loss_fn(logits, y)
    return {M.VAL_LOSS: loss.item(), M.VAL_ACC: (logits.argmax(1) == y).float().mean().item()}


# ---------------------------------------------------------------------------------------------------------------
# the loop of epochs, shared by search and report


def fit(
    config: dict,
    data: dict,
    report: Callable[[dict, dict], None],
    *,
    device: torch.device,
    checkpoint: dict | None = None,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> nn.Module:
    """Train `config["model"]` on data["x_train"] and validate on data["x_val"] for epochs 1..max_epochs.

    The lr schedule's horizon is always `config["max_epochs"]`; `max_epochs` (default: the same) only says where to
    stop, so a retrain of a trial that ran 12 epochs of a 40-epoch cosine reproduces those 12 epochs exactly.

    After each epoch calls `report(metrics, state)` where `state` is a checkpoint dict (model, optimizer,
    scheduler, GradScaler, epoch, generator and global RNG states) holding the live tensors: save or copy it inside
    the callback. Starts after `checkpoint["epoch"]` when resuming. Stops early if the loss diverges. Autocast and
    memory format follow the hardware (`choose_precision`: the GPU's generation, the CPU's bf16 support; config
    "precision" forces one); each report names it. `max_steps`: batches per epoch (memory probes, benchmarks; None =
    all). `progress(epoch, batches done, batches in the epoch)`: after every training batch (in-epoch progress).

    config "ema_decay" (report.py's weight averaging): also keep an exponential moving average of the weights,
    updated every step; `state["ema"]` holds its state dict (BatchNorm statistics not averaged: `recompute_bn`).
    No validation images (report.py's refit on train + validation): no validation, NaN val metrics.
    """
    horizon = int(config["max_epochs"])
    max_epochs = int(max_epochs or horizon)
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    random.seed(seed)  # python's and numpy's global RNGs too: checkpointed and restored like torch's
    np.random.seed(seed)
    x_train, y_train = to_device_tensor(data["x_train"], device), to_device_tensor(data["y_train"], device)
    x_val, y_val = to_device_tensor(data["x_val"], device), to_device_tensor(data["y_val"], device)

    # input_size: the stored side, for builders whose layer sizes depend on it (lenet5 at --image-size N)
    model = build_model(config["model"], len(data["classes"]), **{**config, "input_size": x_train.shape[-1]})
    model = model.to(device)
    precision = choose_precision(device, config.get("precision"))
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean, std, size = input_config(model, *norm_tensors(data["mean"], data["std"], device))
    optimizer = make_optimizer(config, param_groups(model, config))
    freeze_epochs = int(config.get("freeze_epochs", 0))  # train only the head for this many epochs, then all
    batch_size = int(config["batch_size"])
    steps_per_epoch = epoch_steps(x_train.shape[0], batch_size)  # every image once per epoch (augment.py)
    scheduler = make_scheduler(config, optimizer, steps_per_epoch, horizon)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=float(config.get("label_smoothing", 0.0)))
    augment = Augment.from_config(config)
    train_images = EpochAugment(x_train, augment, mean)  # padded once here, augmented afresh each epoch
    scaler = precision.grad_scaler()
    eval_batch = eval_batch_size(device, batch_size)
    ema_decay = float(config.get("ema_decay") or 0.0)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay)) if ema_decay else None

    def validate():
        return evaluate(
            model, x_val, y_val, mean=mean, std=std, device=device, batch_size=eval_batch, precision=precision
        )

    start_epoch = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        generator.set_state(checkpoint["rng"])  # a CPU ByteTensor for CPU and CUDA generators alike
        if "global_rng" in checkpoint:  # checkpoints from before it was saved: the generator only
            set_global_rng_state(checkpoint["global_rng"], device)
        # fp16: the loss scale and growth tracker, so a resumed run scales as an uninterrupted one. Empty (a disabled
        # scaler: bf16 or fp32) or absent (older checkpoints): nothing to restore; torch refuses an empty dict.
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        if averaged is not None and "ema" in checkpoint:
            averaged.module.load_state_dict(checkpoint["ema"])
            averaged.n_averaged.fill_(1)  # not the first update: blend into the restored average
        start_epoch = int(checkpoint["epoch"])

    for epoch in range(start_epoch + 1, max_epochs + 1):
        t0 = time.perf_counter()
        if freeze_epochs:
            set_backbone_trainable(model, epoch > freeze_epochs)
        train = train_one_epoch(
            model,
            optimizer,
            scheduler,
            train_images,
            y_train,
            batch_size=batch_size,
            mean=mean,
            std=std,
            augment=augment,
            loss_fn=loss_fn,
            generator=generator,
            device=device,
            size=size,
            precision=precision,
            scaler=scaler,
            max_steps=max_steps,
            averaged=averaged,
            progress=None if progress is None else functools.partial(progress, epoch),
        )
        result = M.epoch_result(
            train_loss=train[M.TRAIN_LOSS],
            train_acc=train[M.TRAIN_ACC],
            epoch=epoch,
            validate=validate if len(y_val) else None,
            lr=optimizer.param_groups[0]["lr"],
            images=train["images"],
            train_seconds=train["seconds"],
            started=t0,
            precision=precision.name,
        )
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "rng": generator.get_state(),
            "global_rng": global_rng_state(device),  # dropout draws from torch's global RNG, not `generator`
            "scaler": scaler.state_dict(),  # {} when disabled (bf16, fp32)
        }
        if averaged is not None:
            state["ema"] = averaged.module.state_dict()
        report(result, state)
        if result[M.DIVERGED]:
            break
    return model


BN_IMAGES = 10_000  # BatchNorm statistics of averaged weights: a mean over this many training images is exact to ~1%


def recompute_bn(model: nn.Module, config: dict, data: dict, device: torch.device, images: int = BN_IMAGES) -> None:
    """BatchNorm running statistics for `model`'s (averaged) weights, from `images` random training images fed as
    training feeds them (augmented, normalised): torch.optim.swa_utils.update_bn, a plain mean over the batches.
    Averaged weights never produced the statistics a BatchNorm layer kept during training. No BatchNorm: nothing."""
    seed = int(config.get("seed", 0))
    pick = torch.randperm(len(data["y_train"]), generator=torch.Generator().manual_seed(seed))[:images].numpy()
    x, y = to_device_tensor(data["x_train"][pick], device), to_device_tensor(data["y_train"][pick], device)
    mean, std, size = input_config(model, *norm_tensors(data["mean"], data["std"], device))
    augment = Augment.from_config(config)
    batches = epoch_batches(
        EpochAugment(x, augment, mean),
        y,
        batch_size=int(config["batch_size"]),
        mean=mean,
        std=std,
        augment=augment,
        generator=torch.Generator(device=device).manual_seed(seed),
        size=size,
    )
    update_bn((xb for xb, _ in batches), model, device)


def global_rng_state(device: torch.device) -> dict:
    """torch's (CPU and the device's CUDA), numpy's and Python's global RNG states, as tensors, lists and ints only:
    checkpoints are read with torch.load(weights_only=True), which refuses numpy arrays and other objects."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_global_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(state: dict, directory: str) -> None:
    torch.save(state, os.path.join(directory, CHECKPOINT_FILE))


def load_checkpoint(directory: str) -> dict:
    return torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
