"""Search efficiency: ASHA + Optuna vs FIFO + random search on the same space, seed and trial count; Ray's overhead.

    python bench/search_efficiency.py --data-dir ../shared/data/cifar10 --num-samples 16 --max-epochs 10
    python bench/search_efficiency.py --data-dir ../shared/data/cifar10 --overhead-only --num-samples 8 --max-epochs 3

For each strategy: total trial-epochs, wall time of tuner.fit(), best val_acc any trial reached. Both start without
the space's DEFAULTS trial (--no-default-trial), so the searchers find good configs on their own.

Overhead (of the FIFO run, where every trial trains every epoch): 1 - (sum of the trials' own epoch time, from
their epoch_seconds reports) / (tuner.fit() wall time x concurrent trial slots). Everything that is not training
or validating counts against it: trial start-up (process, imports, object-store fetch, model build), reporting,
checkpointing, scheduling gaps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import run_search  # noqa: E402
from analysis.experiment import join, write_json  # noqa: E402
from analysis.trials import load_experiment  # noqa: E402
from search_spaces import get_space  # noqa: E402
from trainables import metrics as M  # noqa: E402
from trainables.data import load_dataset  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="lenet5")
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metric", default="val_loss")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--storage-path", default=None, help="default: a temporary folder")
    p.add_argument("--overhead-only", action="store_true", help="only the FIFO run and its overhead")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def run_strategy(bench, dataset, scheduler: str, searcher: str, storage: str) -> dict:
    import ray

    name = f"{scheduler}-{searcher}"
    args = run_search.parse_args([
        "--model", bench.model, "--data-dir", bench.data_dir, "--num-samples", str(bench.num_samples),
        "--max-epochs", str(bench.max_epochs), "--seed", str(bench.seed), "--metric", bench.metric,
        "--scheduler", scheduler, "--searcher", searcher, "--no-default-trial", "--storage-path", storage,
        "--name", name, "--cpus-per-trial", str(bench.cpus_per_trial),
    ])  # fmt: skip
    args.address = None  # always a fresh local instance
    space, defaults = get_space(args.model)
    run_search.start_ray(args)
    try:
        trainable = run_search.make_trainable(args, dataset.search_arrays())
        constants = {"model": args.model, "max_epochs": args.max_epochs, "seed": args.seed}
        write_json(join(storage, name, "experiment.json"), run_search.experiment_info(args, dataset, space))
        tuner = run_search.build_tuner(args, trainable, {**space, **constants}, defaults, storage)
        slots = min(int(ray.cluster_resources()["CPU"] // args.cpus_per_trial), args.num_samples)
        t = time.perf_counter()
        tuner.fit()
        wall = time.perf_counter() - t
    finally:
        ray.shutdown()
    exp = load_experiment(join(storage, name))
    epochs = sum(len(df) for df in exp.curves.values())
    train_time = sum(float(df[M.EPOCH_SECONDS].sum()) for df in exp.curves.values())
    # Ray times a trial's first iteration from the trainable's start: the excess over the epoch is start-up.
    startup = [float(df["time_this_iter_s"].iloc[0] - df[M.EPOCH_SECONDS].iloc[0]) for df in exp.curves.values()]
    best = max(float(df[M.VAL_ACC].max()) for df in exp.curves.values())
    return {
        "strategy": f"{scheduler.upper()} + {searcher}",
        "trials": len(exp.curves),
        "trial_epochs": epochs,
        "wall_s": wall,
        "best_val_acc": best,
        "sum_trial_epoch_s": train_time,
        "slots": slots,
        "overhead": 1 - train_time / (wall * slots),
        "mean_trial_startup_s": sum(startup) / len(startup),
    }


def main(argv=None) -> int:
    bench = parse_args(argv)
    storage = bench.storage_path or tempfile.mkdtemp(prefix="search-efficiency-")
    dataset = load_dataset(bench.data_dir, seed=bench.seed)
    print(f"{bench.model}, {bench.num_samples} trials x up to {bench.max_epochs} epochs, {bench.cpus_per_trial:g} CPU "
          f"per trial; data {dataset.summary()}; experiments in {storage}", flush=True)  # fmt: skip
    runs = [run_strategy(bench, dataset, "fifo", "random", storage)]
    if not bench.overhead_only:
        runs.append(run_strategy(bench, dataset, "asha", "optuna", storage))
    print(f"\n{'strategy':<18}{'trials':>7}{'trial-epochs':>14}{'wall s':>9}{'best val_acc':>14}{'overhead':>10}"
          f"{'start-up s':>12}")  # fmt: skip
    for r in runs:
        print(f"{r['strategy']:<18}{r['trials']:>7}{r['trial_epochs']:>14}{r['wall_s']:>9.1f}{r['best_val_acc']:>14.4f}"
              f"{r['overhead']:>10.1%}{r['mean_trial_startup_s']:>12.2f}")  # fmt: skip
    out = {"runs": runs}
    if len(runs) == 2:
        fifo, asha = runs
        out["epochs_ratio"] = asha["trial_epochs"] / fifo["trial_epochs"]
        out["val_acc_gap_points"] = 100 * (fifo["best_val_acc"] - asha["best_val_acc"])
        gap = out["val_acc_gap_points"]
        where = f"{-gap:.2f} points above" if gap < 0 else f"{gap:.2f} points below"
        print(f"\nASHA + Optuna used {out['epochs_ratio']:.2f} of the trial-epochs (target <= 0.33); its best val_acc is "
              f"{where} FIFO + random's (target: at most 1 point below)")  # fmt: skip
    if bench.json:
        Path(bench.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
