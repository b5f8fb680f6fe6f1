"""What two searches side by side cost against one alone: the reason the test suite runs in two pytest-xdist workers.

    python bench/side_by_side.py --repeats 3 --json bench/side_by_side.json

Each run is the tests' smoke search (`run_search.py --smoke-test`, LeNet5, 2 trials x 2 epochs on the tiny image
folder of tests/sample_data.py, a fresh Ray each time), as a subprocess. Per repeat: one search alone, then two
started together. For each, the wall time and the busy CPU seconds of the whole machine (from /proc/stat, so other
users' load counts too: the 1-minute load average before each is printed). "pair / alone" is the wall time of the
pair (until both ended) over the wall time of one alone; 2.0 would mean no gain from running two at once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from sample_data import write_image_folder  # noqa: E402


def busy_seconds() -> float:
    """CPU seconds the machine has spent busy since boot (all cores; /proc/stat's first line, in USER_HZ)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def searches(n: int, folder: Path, scratch: Path, tag: str) -> dict:
    cmd = [sys.executable, str(ROOT / "run_search.py"), "--data-dir", str(folder), "--smoke-test", "--model",
           "lenet5", "--num-cpus", "2"]  # fmt: skip
    load = os.getloadavg()[0]
    cpu, t = busy_seconds(), time.time()
    procs = [
        subprocess.Popen(
            [*cmd, "--storage-path", str(scratch / f"{tag}-{i}"), "--name", "s"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CIFAR_TUNE_CACHE": str(scratch / f"cache-{tag}-{i}")},
        )
        for i in range(n)
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"error: a search failed (exit {p.returncode}): {err.strip().splitlines()[-1:]}")
    return {"wall_s": round(time.time() - t, 2), "busy_cpu_s": round(busy_seconds() - cpu, 2), "load_before": load}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="write every run here")
    args = p.parse_args(argv)
    cores = os.cpu_count()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        folder = write_image_folder(scratch / "folder")
        searches(1, folder, scratch, "warmup")  # the page cache and compiled bytecode, as in a test run
        for r in range(args.repeats):
            alone, pair = searches(1, folder, scratch, f"alone{r}"), searches(2, folder, scratch, f"pair{r}")
            runs.append({"alone": alone, "pair": pair, "pair_over_alone": round(pair["wall_s"] / alone["wall_s"], 2)})
            print(
                f"repeat {r}: alone {alone['wall_s']:.1f} s ({alone['busy_cpu_s'] / alone['wall_s'] / cores:.0%} of "
                f"{cores} cores busy, load {alone['load_before']:.2f} before) | two at once {pair['wall_s']:.1f} s "
                f"({pair['busy_cpu_s'] / pair['wall_s'] / cores:.0%} busy, load {pair['load_before']:.2f}) | "
                f"pair / alone {runs[-1]['pair_over_alone']:.2f}",
                flush=True,
            )
    ratios = [r["pair_over_alone"] for r in runs]
    print(f"pair / alone: median {statistics.median(ratios):.2f} over {len(ratios)} repeats (2.00: no gain)")
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
