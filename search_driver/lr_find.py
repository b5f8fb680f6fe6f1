"""The LR range test before a search (torch models): `--lr-find` runs it on the first config, saves the loss-vs-lr
plot and prints the suggested lr; `--lr-range-from-finder` then searches lr around the suggestion.
"""

from __future__ import annotations

import os

from search_driver.cli import SMOKE_LR_FIND_ITERS, UsageError

LR_FIND_PLOT = "lr_find.png"  # in the experiment folder


def run_lr_finder(args, data: dict, config: dict, path: str) -> dict:
    """The LR range test on the first config, in this process (CUDA if this machine has it); plot into `path`."""
    import io

    import torch

    from analysis.experiment import filesystem, join
    from trainables.lr_finder import NUM_ITER, LRFindError, lr_range_test
    from trainables.torch_device import setup_device

    device = setup_device(cpus=args.num_cpus or os.cpu_count() or 1, gpu_fraction=float(torch.cuda.is_available()))
    iters = SMOKE_LR_FIND_ITERS if args.smoke_test else NUM_ITER
    print(f"LR range test: {args.model} on {device.type}, {iters} steps", flush=True)
    try:
        result = lr_range_test(config, data, device=device, num_iter=iters)
    except LRFindError as e:
        raise UsageError(str(e)) from None
    plot = join(path, LR_FIND_PLOT)
    fs, p = filesystem(plot)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    png = io.BytesIO()
    result.figure.savefig(png, format="png", dpi=120, bbox_inches="tight")
    with fs.open_output_stream(p) as f:
        f.write(png.getvalue())
    early = ", stopped early: the loss diverged" if result.stopped_early else ""
    print(
        f"suggested lr: {result.suggested_lr:.3g} (middle of the loss's longest fall{early}); plot: {plot}", flush=True
    )
    return {"suggested_lr": result.suggested_lr, "plot": plot, "steps": len(result.lrs)}


def first_config(space: dict, defaults: dict, constants: dict) -> dict:
    """The first trial's whole config, which the range test trains: the space's fixed keys, DEFAULTS, the constants."""
    from ray.tune.search.sample import Domain

    fixed = {k: v for k, v in space.items() if not isinstance(v, Domain)}
    return {**fixed, **defaults, **constants}


def search_lr_around(suggested_lr: float, space: dict, defaults: dict) -> None:
    """--lr-range-from-finder: lr searched log-uniformly around the suggestion, the first trial at it."""
    from ray import tune

    from trainables.lr_finder import centred_lr_range

    low, high = centred_lr_range(suggested_lr)
    space["lr"], defaults["lr"] = tune.loguniform(low, high), suggested_lr
    print(f"searching lr in [{low:.3g}, {high:.3g}] (log-uniform), first trial at {defaults['lr']:.3g}")
