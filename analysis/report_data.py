"""The data a report needs: the experiment's own dataset, reloaded as the search split it, and the grid of training
images `report.py --samples-only` draws."""

from __future__ import annotations

import sys
from pathlib import Path

from image_data.cache import load_dataset, skip_summary

from .trials import ReportError


def load_data(exp, args):
    """`args`: report.py's data_dir, cache_dir and test_subset."""
    src = exp.info["data"]
    data_dir = args.data_dir or src["path"]
    # the experiment's own image size and training subset; the test set whole unless --test-subset
    ds = load_dataset(
        data_dir,
        seed=exp.info["split_seed"],
        image_size=src.get("image_size", 32),
        cache_dir=args.cache_dir,
        subset=src.get("subset"),
        test_subset=args.test_subset,
    )
    if ds.skipped:
        print(skip_summary(ds.skipped, ds.num_files, f"full list in {exp.path}/experiment.json"), file=sys.stderr)
    return ds


def samples_only(args) -> int:
    from . import plots  # matplotlib: load_data alone does without it

    if not args.data_dir:
        raise ReportError("--samples-only needs --data-dir DIR")
    ds = load_dataset(args.data_dir, cache_dir=args.cache_dir)
    if args.show:
        plots.class_grid(ds.x_train, ds.y_train, ds.classes, None, args.samples_per_class)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = plots.class_grid(
        ds.x_train,
        ds.y_train,
        ds.classes,
        out / f"samples_{Path(args.data_dir).resolve().name}.png",
        args.samples_per_class,
    )
    print(f"wrote {path}")
    return 0
