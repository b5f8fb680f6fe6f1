"""Decode time and cache size of a generated high-resolution image folder, at each --image-size asked.

    python bench/decode.py                                  # 2,000 JPEGs of 640x480, at --image-size 224 and 64
    python bench/decode.py --images 500 --sizes 128 --json out.json

Generates DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg (10 classes, 90/10) of smooth colour fields with
noise (photo-like JPEG sizes, ~60 kB at quality 90), then for each size: a cold load (decode + cache write, into an
empty cache folder), a warm load (the cache), and the cache file's size. The load average (`uptime`) is printed with
the figures: on a shared machine it is part of the result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from image_data.cache import load_dataset  # noqa: E402


def write_folder(root: Path, n: int, width: int, height: int, seed: int = 0) -> int:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    bases = []  # a few smooth colour fields, shifted and noised per image (cheap to make, photo-like to compress)
    for _ in range(10):
        a, b, c = rng.uniform(0, 2 * np.pi, 3)
        bases.append(np.stack([127 + 100 * np.sin(xx / (40 + 20 * k) + p + yy / 90) for k, p in enumerate((a, b, c))],
                              -1).astype(np.int16))  # fmt: skip
    total = 0
    for i in range(n):
        split = "test" if (i // 10) % 10 == 0 else "train"  # every class in both splits, 90/10
        d = root / split / f"class{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        img = np.roll(bases[i % 10], int(rng.integers(width)), axis=1)
        img = img + rng.integers(-12, 13, img.shape, dtype=np.int16)
        path = d / f"{i:05d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        total += path.stat().st_size
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "folder"
        t = time.perf_counter()
        on_disk = write_folder(root, args.images, args.width, args.height)
        print(f"generated {args.images:,} JPEGs of {args.width}x{args.height} ({on_disk / 1e6:.0f} MB) "
              f"in {time.perf_counter() - t:.0f} s", flush=True)  # fmt: skip
        for size in args.sizes:
            cache = Path(tmp) / f"cache-{size}"
            load = os.getloadavg()[0]
            t = time.perf_counter()
            ds = load_dataset(root, image_size=size, cache_dir=cache, quiet=True)
            cold = time.perf_counter() - t
            t = time.perf_counter()
            load_dataset(root, image_size=size, cache_dir=cache, quiet=True)
            warm = time.perf_counter() - t
            (npz,) = cache.glob("*.npz")
            n = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
            rows.append({"image_size": size, "images": n, "decode_s": round(cold, 2), "cache_load_s": round(warm, 2),
                         "cache_mb": round(npz.stat().st_size / 1e6, 1), "images_per_s": round(n / cold),
                         "load_avg_1min": round(load, 2)})  # fmt: skip
            print(f"--image-size {size}: decode {cold:.1f} s ({n / cold:,.0f} images/s), cache "
                  f"{npz.stat().st_size / 1e6:.0f} MB (uint8 {size}x{size}x3 = {size * size * 3:,} B per image), "
                  f"cached load {warm:.2f} s; load average {load:.1f}", flush=True)  # fmt: skip
    print(f"machine: {os.cpu_count()} CPUs; uptime load average now {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
