"""One command for anyone with a GPU: per model, the precision its trials use, training images/s, peak GPU memory,
and whether 2 and 4 trials fit on this GPU (the `--gpus-per-trial auto` arithmetic).

    python bench/gpu_check.py                                  # CIFAR-10-sized random data (45,000 / 5,000)
    python bench/gpu_check.py --data-dir ../shared/data/cifar10 --json gpu_check.json

Each model runs at its search space's DEFAULTS (resnet18_pretrained also at resolution 224, its weights' size) in
a fresh process, through the trial's own code: `setup_device` (memory cap off: a whole GPU), `fit` with its
precision, on-device data and eval batch, for 2 epochs of --steps batches each (the first warms cuDNN up; images/s
is the second's). Torch peak = the caching allocator's peak reserved bytes; context = device memory in use outside
the allocator (total - free - reserved). Keras: TF's peak for GPU:0 (`tf.config.experimental.get_memory_info`) on
--steps batches of data, the context budgeted (trainables/gpu_share.py), as TF reports none.
On a machine without a CUDA GPU it says so in one line and exits 1.

Needs only torch (>= 2.11), torchvision, numpy and pillow: the torch rows import no Ray, Optuna or TensorFlow (the
search space's first config is read without Ray: search_spaces/ranges.py), so it runs on a bare CUDA machine a Ray
wheel cannot reach. Without TensorFlow the Keras row says so in one line; --data-dir on an image folder also decodes
with tqdm's progress bar.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (model, overrides of its DEFAULTS): what a first trial runs, and the pretrained model at its native 224 px
CHECKS = [
    ("lenet5", {}),
    ("resnet18", {}),
    ("resnet18_pretrained", {"resolution": 224}),
    ("keras_resnet18", {}),
]
GiB = 2**30


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="real data (default: random uint8 arrays of CIFAR-10's size)")
    p.add_argument("--steps", type=int, default=30, help="training batches per epoch (2 epochs)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one CHECKS entry, print JSON
    return p.parse_args(argv)


def arrays(data_dir: str | None) -> dict:
    """search_arrays() of --data-dir, or random images of CIFAR-10's split sizes (the memory is what matters)."""
    import numpy as np

    if data_dir:
        from image_data.cache import load_dataset

        return load_dataset(data_dir).search_arrays()
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (45_000, 3, 32, 32), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 45_000).astype(np.int64),
        "x_val": rng.integers(0, 256, (5_000, 3, 32, 32), dtype=np.uint8),
        "y_val": rng.integers(0, 10, 5_000).astype(np.int64),
        "classes": [str(i) for i in range(10)],
        "mean": [0.49, 0.48, 0.45],
        "std": [0.25, 0.24, 0.26],
    }


def config_of(model: str, overrides: dict) -> dict:
    from search_spaces import first_config  # the space's constants and DEFAULTS: no Ray needed

    return {**first_config(model), **overrides, "model": model, "seed": 0, "load_weights": False}


def measure_one(index: int, data_dir: str | None, steps: int) -> dict:
    model, overrides = CHECKS[index]
    config = config_of(model, overrides)
    data = arrays(data_dir)
    row = {"model": model, "resolution": config.get("resolution", 32), "batch_size": int(config["batch_size"])}
    if model.startswith("keras"):
        return {**row, **measure_keras(config, data, steps)}
    from search_driver.gpu_packing import measure

    m = measure(config, data, steps=steps, epochs=2)
    return {**row, **{k: m[k] for k in ("precision", "images_per_s", "peak_reserved", "context", "total", "gpu")}}


def measure_keras(config: dict, data: dict, steps: int) -> dict:
    from trainables.gpu_share import CONTEXT_RESERVE_BYTES
    from trainables.keras_loop import fit, setup_tensorflow, tf

    setup_tensorflow(cpus=os.cpu_count() or 1, gpu_fraction=1.0)  # memory growth: the peak is what it used
    n = steps * int(config["batch_size"])
    small = {**data, "x_train": data["x_train"][:n], "y_train": data["y_train"][:n]}
    reports = []
    fit({**config, "max_epochs": 2}, small, lambda r, s: reports.append(r))
    info = tf.config.experimental.get_memory_info("GPU:0")
    total = _nvidia_smi_total()
    return {"precision": reports[-1]["precision"], "images_per_s": reports[-1]["images_per_s"],
            "peak_reserved": int(info["peak"]), "context": CONTEXT_RESERVE_BYTES, "total": total,
            "gpu": tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0]).get(
                "device_name", "GPU:0")}  # fmt: skip


def _nvidia_smi_total() -> int:
    from trainables.keras_loop import gpu_total_memory_mb

    return int((gpu_total_memory_mb(0) or 0) * 2**20)


def fits(row: dict, k: int) -> bool:
    """k trials of this model fit the GPU with the auto packing's headroom (search_driver/gpu_packing.py)."""
    from search_driver.gpu_packing import MAX_TRIALS_PER_GPU, PackingError, choose_packing

    try:
        packing = choose_packing(row["peak_reserved"], row["context"], row["total"], max_per_gpu=MAX_TRIALS_PER_GPU)
    except PackingError:
        return False
    return packing.trials_per_gpu >= k


def format_table(header: str, rows: list[dict]) -> str:
    """The report: a header line, then one row per model (or its error), all within 120 columns."""
    lines = [header, f"{'model':<20} {'res':>4} {'batch':>5} {'precision':<9} {'images/s':>9} {'peak GiB':>8} "
             f"{'context GiB':>11} {'2/GPU':>5} {'4/GPU':>5}"]  # fmt: skip
    for r in rows:
        if "error" in r or "skipped" in r:
            what = f"error: {r['error']}" if "error" in r else f"skipped: {r['skipped']}"
            lines.append(f"{r['model']:<20} {what}"[:120])
            continue
        lines.append(
            f"{r['model']:<20} {r['resolution']:>4} {r['batch_size']:>5} {r['precision']:<9} {r['images_per_s']:>9.0f} "
            f"{r['peak_reserved'] / GiB:>8.2f} {r['context'] / GiB:>11.2f} {'yes' if fits(r, 2) else 'no':>5} "
            f"{'yes' if fits(r, 4) else 'no':>5}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.one is not None:
        print(json.dumps(measure_one(int(args.one), args.data_dir, args.steps)))
        return 0
    if not torch.cuda.is_available():
        why = "a CPU-only torch build" if torch.version.cuda is None else "no CUDA device visible"
        print(f"no GPU: bench/gpu_check.py measures on a CUDA GPU, and torch {torch.__version__} finds none here "
              f"({why}); run it on a CUDA machine (torch, torchvision, numpy and pillow suffice; "
              "requirements-gpu.txt adds the Keras row)", file=sys.stderr)  # fmt: skip
        return 1
    props = torch.cuda.get_device_properties(0)
    header = (f"gpu_check: {props.name} ({props.total_memory / GiB:.2f} GiB, sm{props.major}{props.minor}), torch "
              f"{torch.__version__}, --steps {args.steps}, {'data ' + args.data_dir if args.data_dir else 'random data'}")  # fmt: skip
    rows = []
    for i, (model, _) in enumerate(CHECKS):
        if model.startswith("keras") and importlib.util.find_spec("tensorflow") is None:
            rows.append({"model": model, "skipped": "TensorFlow is not installed here (requirements-gpu.txt has it)"})
            print(format_table(header, rows).splitlines()[-1], flush=True)
            continue
        cmd = [sys.executable, __file__, "--one", str(i), "--steps", str(args.steps)]
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)  # a fresh process: its own peak
        if proc.returncode == 0:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            last = (proc.stderr.strip().splitlines() or ["exit code " + str(proc.returncode)])[-1]
            rows.append({"model": model, "error": last})
        print(format_table(header, rows).splitlines()[-1] if len(rows) > 1 else format_table(header, rows), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
