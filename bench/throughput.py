"""Training throughput, side by side in one run: compute-only limit vs our pipeline vs a torchvision DataLoader.

    python bench/throughput.py --data-dir ../shared/data/cifar10 --model lenet5
    python bench/throughput.py --data-dir ../shared/data/cifar10 --model resnet18 --subset 512 --json out.json

1. limit: forward + backward + optimizer step on one normalised batch already in memory (no data work at all);
2. pipeline: our trainable's epoch path, `train_one_epoch` (index the shared uint8 arrays, batched on-device crop +
   flip, normalise, step): the number a trial reports as images_per_s;
3. reference: torchvision ImageFolder / CIFAR10 + DataLoader with per-image PIL transforms (RandomCrop(32, 4),
   RandomHorizontalFlip, ToTensor, Normalize), the conventional tutorial pipeline.
Same model, batch size, threads, augmentation and optimizer (Adam) for all three. Each figure is the best of
--repeats timed passes over --steps batches after a warm-up, so a noisy neighbour costs a repeat, not the result.

`--precision` and `--memory-format` set the compute-only limit's autocast and layout (default: the trial's, by
hardware: trainables/torch_device.choose_precision); `--limit-only` measures only that, e.g. the CPU's precision
choice: `--threads 1 --precision bf16 --memory-format channels_last --limit-only` against `--precision fp32`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from image_data.cache import load_dataset  # noqa: E402
from trainables.augment import Augment, EpochAugment  # noqa: E402
from trainables.models import build_model  # noqa: E402
from trainables.torch_device import choose_precision, setup_device  # noqa: E402
from trainables.torch_loop import (  # noqa: E402
    input_config,
    make_optimizer,
    make_scheduler,
    norm_tensors,
    to_device_tensor,
    train_one_epoch,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="lenet5")
    p.add_argument("--stem", default=None, help="resnet18: cifar or imagenet")
    p.add_argument("--resolution", type=int, default=None, help="resnet18_pretrained: input side")
    p.add_argument("--weights", default=None, help="resnet18_pretrained: a resnet18 state dict (any: speed only)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--steps", type=int, default=150, help="batches per timed pass")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--subset", type=int, default=None, help="training images to use (small for slow models)")
    p.add_argument("--ref-workers", type=int, default=2, help="DataLoader workers of the reference (tutorials: 2)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="write every figure and the ratios here")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None, help="default: the device's")
    p.add_argument(
        "--memory-format",
        choices=["channels_last", "contiguous"],
        default=None,
        help="of the compute-only limit (default: the precision's)",
    )
    p.add_argument("--limit-only", action="store_true", help="measure the compute-only limit only")
    return p.parse_args(argv)


def model_config(args) -> dict:
    cfg = {"model": args.model, "lr": 1e-3, "optimizer": "adam", "schedule": "constant", "batch_size": args.batch_size}
    if args.stem:
        cfg["stem"] = args.stem
    if args.resolution:
        cfg["resolution"] = args.resolution
    if args.weights:
        cfg["weights_path"] = args.weights
    return cfg


def make_model(cfg, num_classes, device):
    torch.manual_seed(0)
    model = build_model(cfg["model"], num_classes, **cfg).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_rate(fn, images_per_call: int, repeats: int, device) -> float:
    fn()  # warm-up: allocator, cuDNN autotune, DataLoader workers
    _sync(device)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        rates.append(images_per_call / (time.perf_counter() - t))
    return max(rates)


def bench_limit(cfg, data, device, args) -> float:
    """Compute only: the same normalised batch every step, model + loss + backward + Adam step."""
    model = make_model(cfg, len(data["classes"]), device)
    opt = make_optimizer(cfg, model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    mean, std, size = input_config(model, *norm_tensors(data["mean"], data["std"], device))
    xb = ((torch.from_numpy(np.array(data["x_train"][: args.batch_size])).to(device).float() / 255) - mean) / std
    if size:  # pretrained models: the resolution they are fed at, as in training
        xb = torch.nn.functional.interpolate(xb, size=size, mode="bilinear", align_corners=False)
    precision = choose_precision(device, args.precision)
    channels_last = precision.channels_last if args.memory_format is None else args.memory_format == "channels_last"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        xb = xb.contiguous(memory_format=torch.channels_last)
    yb = torch.from_numpy(np.array(data["y_train"][: args.batch_size])).to(device)
    autocast = precision.autocast()
    model.train()

    def run():
        for _ in range(args.steps):
            with autocast:
                loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return best_rate(run, args.steps * args.batch_size, args.repeats, device)


def bench_pipeline(cfg, data, device, args) -> float:
    """Our epoch path on the first steps x batch images of the shared arrays, augmentation on, in the trial's
    precision and memory format (fit's)."""
    precision = choose_precision(device, args.precision)
    model = make_model(cfg, len(data["classes"]), device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg, model.parameters())
    n = args.steps * args.batch_size
    x = to_device_tensor(np.ascontiguousarray(data["x_train"][:n]), device)
    y = to_device_tensor(np.ascontiguousarray(data["y_train"][:n]), device)
    mean, std, size = input_config(model, *norm_tensors(data["mean"], data["std"], device))
    sched = make_scheduler(cfg, opt, args.steps, 1)
    gen = torch.Generator(device=device).manual_seed(0)
    aug = Augment(flip=True, crop_padding=4, cutout=0)
    images = EpochAugment(x, aug, mean)  # as fit() prepares it once per trial
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        train_one_epoch(model, opt, sched, images, y, batch_size=args.batch_size, mean=mean, std=std, augment=aug,
                        loss_fn=loss_fn, generator=gen, device=device, size=size, precision=precision)  # fmt: skip

    return best_rate(run, (n // args.batch_size) * args.batch_size, args.repeats, device)


def reference_loader(data_source: dict, mean, std, size, args):
    import torchvision.transforms as T
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import CIFAR10, ImageFolder

    resize = [T.Resize(size)] if size else []  # pretrained models: the tutorial way, PIL resize per image
    tf = T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *resize, T.ToTensor(), T.Normalize(mean, std)]
    )
    if data_source["kind"] == "folder":
        ds = ImageFolder(os.path.join(data_source["path"], "train"), transform=tf)
    else:
        ds = CIFAR10(data_source["path"], train=True, transform=tf)
    n = args.steps * args.batch_size
    ds = Subset(ds, np.random.default_rng(0).permutation(len(ds))[:n].tolist())  # all classes, not the first folder
    return DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.ref_workers, drop_last=True,
                      persistent_workers=args.ref_workers > 0, pin_memory=args.device == "cuda")  # fmt: skip


def bench_reference(cfg, data, source, device, args) -> float:
    model = make_model(cfg, len(data["classes"]), device)
    opt = make_optimizer(cfg, model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    mean, std, size = input_config(model, *norm_tensors(data["mean"], data["std"], device))
    loader = reference_loader(source, mean.flatten().tolist(), std.flatten().tolist(), size, args)
    model.train()

    def run():
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return best_rate(run, len(loader) * args.batch_size, args.repeats, device)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup_device(cpus=args.threads, device=args.device)
    ds = load_dataset(args.data_dir, subset=args.subset)
    data = ds.search_arrays()
    args.steps = min(args.steps, len(ds.y_train) // args.batch_size)
    cfg = model_config(args)
    print(f"{args.model} batch {args.batch_size}, {args.threads} threads, {device}, {args.steps} steps x "
          f"{args.repeats} repeats; data {ds.summary()}", flush=True)  # fmt: skip
    limit = bench_limit(cfg, data, device, args)
    precision = choose_precision(device, args.precision)
    fmt = args.memory_format or ("channels_last" if precision.channels_last else "contiguous")
    print(f"1. compute-only limit      {limit:9.0f} images/s ({precision.name}, {fmt})", flush=True)
    if args.limit_only:
        if args.json:
            row = {
                "model": args.model,
                "stem": args.stem,
                "threads": args.threads,
                "precision": precision.name,
                "memory_format": fmt,
                "limit_images_per_s": limit,
            }
            Path(args.json).write_text(json.dumps(row, indent=2))
        return 0
    pipeline = bench_pipeline(cfg, data, device, args)
    print(f"2. our pipeline            {pipeline:9.0f} images/s", flush=True)
    reference = bench_reference(cfg, data, ds.source, device, args)
    print(f"3. DataLoader reference    {reference:9.0f} images/s ({args.ref_workers} workers)", flush=True)
    out = {
        "model": args.model, "stem": args.stem, "resolution": args.resolution, "batch_size": args.batch_size,
        "threads": args.threads, "device": str(device), "steps": args.steps, "repeats": args.repeats,
        "ref_workers": args.ref_workers, "data": ds.summary(),
        "limit_images_per_s": limit, "pipeline_images_per_s": pipeline, "reference_images_per_s": reference,
        "ratio_vs_limit": pipeline / limit, "ratio_vs_reference": pipeline / reference,
    }  # fmt: skip
    print(f"ratio pipeline/limit {out['ratio_vs_limit']:.2f} (target >= 0.85), "
          f"pipeline/reference {out['ratio_vs_reference']:.1f}x (target >= 4)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
