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
SHM_FLOOR = 10 * 10**9  # Ray never caps by /dev/shm below this (REQUIRE_SHM_SIZE_THRESHOLD): a small one spills to /tmp

# Ray's reads of a container's memory (ray/_private/utils.py get_system_memory, get_cgroup_mem_stats): v1, then v2
_V1, _V2 = "/sys/fs/cgroup/memory/memory.", "/sys/fs/cgroup/memory."
_CGROUPS = (  # (limit, usage, stat, stat key prefix)
    (_V1 + "limit_in_bytes", _V1 + "usage_in_bytes", _V1 + "stat", "total_"),
    (_V2 + "max", _V2 + "current", _V2 + "stat", ""),
)


def available_memory() -> int:
    """Memory Ray counts as available when it starts (estimate_available_memory): total (capped by a container's
    cgroup limit) minus used, where a cgroup's used excludes its page cache (active and inactive file pages)."""
    import psutil

    vm = psutil.virtual_memory()
    total, used = vm.total, vm.used
    for limit_file, usage_file, stat_file, prefix in _CGROUPS:
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if limit.isnumeric():
            total = min(total, int(limit))
        try:
            stat = dict(line.split() for line in Path(stat_file).read_text().splitlines() if line.count(" ") == 1)
            cache = int(stat[f"{prefix}inactive_file"]) + int(stat[f"{prefix}active_file"])
            used = int(Path(usage_file).read_text().split()[0]) - cache
        except (OSError, KeyError, ValueError, IndexError):
            pass
        break
    return max(0, int(total - used))


def object_store_capacity(held_bytes: int) -> int:
    """The object store a local `ray.init` gets (start_ray passes it as object_store_memory): Ray's own default rule
    (resolve_object_store_memory), 30% of the memory available when it starts (after the driver holds `held_bytes`
    of decoded arrays), at most 95% of /dev/shm (Linux keeps the store there; never below 10 GB) and 200 GB."""
    cap = OBJECT_STORE_CAP
    try:
        shm = os.statvfs("/dev/shm")
        cap = min(cap, max(SHM_FLOOR, int(0.95 * shm.f_bavail * shm.f_bsize)))
    except OSError:  # no /dev/shm (macOS): Ray uses a file-backed store
        pass
    return min(cap, int(OBJECT_STORE_FRACTION * max(0, available_memory() - held_bytes)))


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
