"""fp32 against bf16 on this CPU, same configs: final and best val_acc of LeNet5 and ResNet18 (7x7 stem) trained
by the trial's own `fit`, and training images/s; Keras ResNet18's images/s with float32 and mixed_bfloat16.

    python bench/precision_parity.py --data-dir ../shared/data/cifar10 --json precision_parity.json
    python bench/precision_parity.py --data-dir ../shared/data/cifar10 --subset 5000 --epochs 2 --seeds 0  # a check

Each model trains its search space's first config (resnet18 with the 7x7 "imagenet" stem, the one a CPU budget
affords) for --epochs (default: lenet5 40, its space's horizon; resnet18 10, the horizon a 20-minute 2-core search
affords) under each precision and seed, each run in a fresh process on --threads threads, alternating precisions so
a noisy neighbour spreads over both. Parity holds when the mean difference of final val_acc (bf16 - fp32) is within
the run-to-run spread (the largest seed-to-seed difference under one precision). The Keras rows train 2 epochs of
--keras-images images (speed only: the first epoch traces). Run `uptime` before and name the load with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EPOCHS = {"lenet5": 40, "resnet18": 10}
OVERRIDES = {"resnet18": {"stem": "imagenet"}, "keras_resnet18": {"stem": "imagenet"}}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--models", nargs="+", default=["lenet5", "resnet18"], choices=["lenet5", "resnet18"])
    p.add_argument("--epochs", type=int, default=None, help="epochs of every run (default: lenet5 40, resnet18 10)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--subset", type=int, default=None, help="training images (validation: a tenth)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--keras-images", type=int, default=4096, help="training images of the Keras speed rows (0: none)")
    p.add_argument("--json", default=None)
    p.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)  # internal: MODEL PRECISION SEED
    return p.parse_args(argv)


def config_of(model: str, seed: int, epochs: int) -> dict:
    from search_spaces import first_config

    return {**first_config(model), **OVERRIDES.get(model, {}), "model": model, "seed": seed, "max_epochs": epochs}


def run_one(args, model: str, precision: str, seed: int) -> dict:
    """One training run in this (fresh) process: per-epoch val_acc and images/s."""
    from image_data.cache import load_dataset

    data = load_dataset(args.data_dir, subset=args.subset).search_arrays()
    reports = []
    if model.startswith("keras"):
        from trainables.keras_loop import fit, setup_tensorflow

        setup_tensorflow(cpus=args.threads, precision=precision)
        n = min(args.keras_images, len(data["y_train"]))
        data = {**data, "x_train": data["x_train"][:n], "y_train": data["y_train"][:n]}
        fit(config_of(model, seed, 2), data, lambda r, s: reports.append(r))
    else:
        from trainables.torch_device import setup_device
        from trainables.torch_loop import fit

        device = setup_device(cpus=args.threads, device="cpu")
        config = {**config_of(model, seed, args.epochs or EPOCHS[model]), "precision": precision}
        fit(config, data, lambda r, s: reports.append(r), device=device)
    return {
        "model": model,
        "precision": reports[-1]["precision"],
        "seed": seed,
        "epochs": len(reports),
        "final_val_acc": reports[-1]["val_acc"],
        "best_val_acc": max(r["val_acc"] for r in reports),
        "images_per_s": statistics.median(r["images_per_s"] for r in reports[1:] or reports),
        "epoch_s": statistics.median(r["epoch_seconds"] for r in reports),
    }


def summary(rows: list[dict]) -> list[str]:
    """Per model: mean final val_acc under each precision, their difference, the run-to-run spread, the speed-up."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        by = {p: [r for r in rows if r["model"] == model and r["precision"] == p] for p in ("fp32", "bf16")}
        if not all(by.values()):
            continue
        speed = statistics.mean(r["images_per_s"] for r in by["bf16"]) / statistics.mean(
            r["images_per_s"] for r in by["fp32"]
        )
        if model.startswith("keras"):
            out.append(f"{model}: bf16 trains at {speed:.2f}x fp32's images/s")
            continue
        acc = {p: statistics.mean(r["final_val_acc"] for r in rs) for p, rs in by.items()}
        spread = max(max(r["final_val_acc"] for r in rs) - min(r["final_val_acc"] for r in rs) for rs in by.values())
        if min(len(rs) for rs in by.values()) < 2:
            verdict = "one seed: no spread to compare with,"
        else:
            verdict = "within" if abs(acc["bf16"] - acc["fp32"]) <= spread else "outside"
        out.append(
            f"{model}: final val_acc fp32 {acc['fp32']:.4f}, bf16 {acc['bf16']:.4f} (difference "
            f"{acc['bf16'] - acc['fp32']:+.4f}, {verdict} the seed spread {spread:.4f}); bf16 at {speed:.2f}x the images/s"
        )
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        model, precision, seed = args.one
        print(json.dumps(run_one(args, model, precision, int(seed))))
        return 0
    runs = [(m, p, s) for m in args.models for s in args.seeds for p in ("fp32", "bf16")]
    if args.keras_images:
        runs += [("keras_resnet18", p, 0) for p in ("fp32", "bf16")]
    print(f"precision_parity: {len(runs)} runs, {args.threads} threads, load {os.getloadavg()[0]:.1f}", flush=True)
    print(
        f"{'model':<15} {'precision':<9} {'seed':>4} {'epochs':>6} {'final val_acc':>13} {'best':>7} "
        f"{'images/s':>9} {'s/epoch':>8}",
        flush=True,
    )
    rows = []
    for model, precision, seed in runs:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            model,
            precision,
            str(seed),
            "--data-dir",
            args.data_dir,
            "--threads",
            str(args.threads),
            "--keras-images",
            str(args.keras_images),
        ]
        cmd += ["--subset", str(args.subset)] if args.subset else []
        cmd += ["--epochs", str(args.epochs)] if args.epochs else []
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)  # fresh: threads, policy, RNG state
        if proc.returncode != 0:
            print(
                f"{model:<15} {precision:<9} {seed:>4} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"[:120]
            )
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(
            f"{r['model']:<15} {r['precision']:<9} {r['seed']:>4} {r['epochs']:>6} {r['final_val_acc']:>13.4f} "
            f"{r['best_val_acc']:>7.4f} {r['images_per_s']:>9.0f} {r['epoch_s']:>8.1f}",
            flush=True,
        )
    lines = summary(rows)
    print("\n".join(lines) + f"\nload after {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": lines, "threads": args.threads}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
