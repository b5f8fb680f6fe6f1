"""The search's data: the image size to store, whether the arrays fit in Ray's object store, what was skipped.

Runs in the driver before Ray starts: the file listing gives the image count and the size, so a data set that
cannot fit fails in one line before a minute of decoding.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from image_data.cache import DEFAULT_SIDE, DataError, Dataset, DecodePlan, load_dataset, skip_summary


def human_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def model_side(args, smoke_resolution: int) -> int:
    """The input side the model will be fed: DEFAULT_SIDE, or for models that search `resolution`
    (resnet18_pretrained) --resolution, --smoke-test's, or the largest searched value."""
    from search_spaces import get_space

    space, _ = get_space(args.model)
    if "resolution" not in space:
        return DEFAULT_SIDE
    if args.resolution:
        return int(args.resolution)
    if args.smoke_test:
        return smoke_resolution
    res = space["resolution"]
    return int(max(res.categories) if hasattr(res, "categories") else getattr(res, "upper", res))


OBJECT_STORE_FRACTION = 0.3  # Ray's default share of the available memory (ray_constants)
OBJECT_STORE_CAP = 200 * 10**9  # and its default cap


def available_memory() -> int:
    """Memory available to this process: the machine's (psutil), or less under a cgroup (v2) limit, as in a container."""
    import psutil

    available = psutil.virtual_memory().available
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, int(available))


def object_store_capacity(held_bytes: int) -> int:
    """The object store a local `ray.init` gets (start_ray passes it as object_store_memory): Ray's own default rule,
    30% of the memory available when it starts (after the driver holds `held_bytes` of decoded arrays), at most
    /dev/shm's free space (Linux keeps the store there) and 200 GB."""
    capacity = min(OBJECT_STORE_CAP, int(OBJECT_STORE_FRACTION * max(0, available_memory() - held_bytes)))
    try:
        shm = os.statvfs("/dev/shm")
        capacity = min(capacity, shm.f_bavail * shm.f_frsize)
    except OSError:  # no /dev/shm (macOS): Ray uses a file-backed store
        pass
    return capacity


def object_store_check(args):
    """check(plan) for load_dataset: DataError when the search arrays would not fit in the local object store.

    On a cluster (--address) the store belongs to the cluster's nodes, sized by their own `ray start`: not checked."""
    if args.address:
        return None

    def check(plan: DecodePlan) -> None:
        need, capacity = plan.search_bytes, object_store_capacity(plan.total_bytes)
        if need > capacity:
            n = plan.image_size
            raise DataError(
                f"{plan.search_images:,} train/val images at {n}x{n} need {human_bytes(need)} (uint8 {n}x{n}x3 each) "
                f"in Ray's object store, which will hold {human_bytes(capacity)} here (30% of free RAM); "
                "use a smaller --image-size or --subset N"
            )

    return check


def load_search_data(args, subset: int | None, smoke_resolution: int) -> Dataset:
    """load_dataset for run_search.py (its `source["image_size"]`: the size it chose, for the settings)."""
    dataset = load_dataset(
        args.data_dir,
        seed=args.seed,
        image_size=args.image_size,
        cache_dir=args.cache_dir,
        subset=subset,
        model_side=model_side(args, smoke_resolution),
        strict=args.strict_data,
        download=args.download,
        check=object_store_check(args),
    )
    if dataset.skipped:
        print(skip_summary(dataset.skipped, dataset.num_files, "full list in experiment.json"), file=sys.stderr)
    return dataset
