"""Torch threads for report.py's retrain: LeNet-5 epochs with 1 vs 2 (or --threads-list) threads, with and without
extra busy processes, on the same data and config (the lenet5 space's first point, the original recipe).

    python bench/threads.py --data-dir ../shared/data/cifar10 --subset 5000 --epochs 2 --busy 0 1

Each condition runs `--epochs` epochs of `fit` (the loop report.py and the trials use) and prints seconds per epoch
(median) and images/s; conditions alternate, so a noisy neighbour spreads over all of them. `--busy K` starts K
processes spinning on a core (a stand-in for other users) for the duration of that condition. The load average
before and after is printed: name it with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from image_data.cache import load_dataset  # noqa: E402
from search_spaces import get_space  # noqa: E402
from trainables import metric_names as M  # noqa: E402
from trainables.torch_device import setup_device  # noqa: E402
from trainables.torch_loop import fit  # noqa: E402

SPIN = "import time\nend = time.time() + 600\nwhile time.time() < end: pass"  # ends by itself if we die


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--subset", type=int, default=5000, help="training images (validation: a tenth)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per condition")
    p.add_argument("--threads-list", type=int, nargs="+", default=[1, 2])
    p.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="extra spinning processes per condition")
    p.add_argument("--rounds", type=int, default=1, help="repeat every condition this many times, interleaved")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def lenet_config(epochs: int) -> dict:
    from ray.tune.search.sample import Domain

    space, defaults = get_space("lenet5")
    fixed = {k: v for k, v in space.items() if not isinstance(v, Domain)}
    return {**fixed, **defaults, "model": "lenet5", "max_epochs": epochs, "seed": 0}


def run(config: dict, data: dict, threads: int, epochs: int) -> list[dict]:
    device = setup_device(cpus=threads, device="cpu")
    rows = []
    fit(config, data, lambda result, state: rows.append(dict(result)), device=device, max_epochs=epochs)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    data = load_dataset(args.data_dir, subset=args.subset).search_arrays()
    config = lenet_config(args.epochs)
    print(f"cores {os.cpu_count()}, load before {os.getloadavg()}, {args.subset} images, config {config}", flush=True)
    out = []
    for r in range(args.rounds):
        for busy in args.busy:
            for threads in args.threads_list:
                spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
                try:
                    time.sleep(0.5 if busy else 0)
                    load = os.getloadavg()[0]
                    rows = run(config, data, threads, args.epochs)
                finally:
                    for s in spinners:
                        s.kill()
                        s.wait()
                secs = statistics.median(row[M.EPOCH_SECONDS] for row in rows)
                ips = statistics.median(row[M.IMAGES_PER_S] for row in rows)
                out.append({"round": r, "busy": busy, "threads": threads, "epoch_s": secs, "images_per_s": ips,
                            "load1_at_start": load})  # fmt: skip
                print(f"busy {busy}  threads {threads}: {secs:6.2f} s/epoch  {ips:7.0f} images/s  "
                      f"(load {load:.2f})", flush=True)  # fmt: skip
    print(f"load after {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
