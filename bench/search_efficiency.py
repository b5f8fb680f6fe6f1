"""Search efficiency: ASHA + Optuna vs FIFO + random search on the same space and trial count, over several seeds;
how well early epochs rank trials (what ASHA's rungs rely on); the DEFAULTS trial alone; Ray's overhead.

    # the README / docs/search.md table: 3 seeds, 16 trials x 20 epochs on a 10,000-image training subset
    python bench/search_efficiency.py --data-dir ../shared/data/cifar10 --seeds 3 --subset 10000 \\
        --num-samples 16 --max-epochs 20 --json bench/search_efficiency.json
    python bench/search_efficiency.py --data-dir ../shared/data/cifar10 --overhead-only --num-samples 8 --max-epochs 3
    # TPE told each trial's best epoch (stopped ones PRUNED) vs told its last value (Ray's OptunaSearch), 3 seeds
    python bench/search_efficiency.py --data-dir ../shared/data/cifar10 --compare-told --seeds 3 --subset 10000 \
        --num-samples 32 --max-epochs 20 --json bench/search_told.json

Per seed and strategy: trial-epochs, best val_acc any trial reached, wall time. Both strategies start without the
space's DEFAULTS trial (--no-default-trial), so the searchers find good configs on their own; DEFAULTS is then
trained alone for the same epochs, to say how far the search's best lies above it.

Rank correlation (from the FIFO runs, where every trial trains every epoch): Spearman's rho between each trial's
val_loss at epoch e and its best val_loss over the whole run, for each e; this is what decides where ASHA's first
rung may sit (search_driver/cli.py: GRACE_DIVISOR).

ASHA replay: Ray's ASHAScheduler fed the FIFO runs' curves for other grace periods and reduction factors
(bench/asha_replay.py), which is how GRACE_DIVISOR and DEFAULT_REDUCTION_FACTOR (search_driver/cli.py) were chosen.

Overhead (of the FIFO run, where every trial trains every epoch): 1 - (sum of the trials' own epoch time, from
their epoch_seconds reports) / (tuner.fit() wall time x concurrent trial slots).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asha_replay  # noqa: E402  (bench/, beside this file)

from analysis.experiment import join, write_json  # noqa: E402
from analysis.settings import Settings  # noqa: E402
from analysis.trials import load_experiment  # noqa: E402
from image_data.cache import load_dataset  # noqa: E402
from search_driver import cli  # noqa: E402
from search_driver.cluster import start_ray  # noqa: E402
from search_driver.tuner import build_tuner, experiment_info, make_trainable  # noqa: E402
from search_spaces import get_space  # noqa: E402
from trainables import metric_names as M  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="lenet5")
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 (data split, sampler, trials)")
    p.add_argument("--subset", type=int, default=None, help="training images kept (stratified), for speed")
    p.add_argument("--metric", default="val_loss")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--storage-path", default=None, help="default: a temporary folder")
    p.add_argument("--overhead-only", action="store_true", help="only one FIFO run and its overhead")
    p.add_argument(
        "--compare-told",
        action="store_true",
        help="only ASHA + Optuna, twice per seed: TPE told each trial's best epoch (PRUNED when stopped; the search's "
        "own searcher) against Ray's OptunaSearch (last value, COMPLETE), side by side",
    )
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def rays_optuna_search(args, defaults: dict, storage: str, prior=None):
    """Ray's own OptunaSearch, as the search used it before search_driver/optuna_searcher.py: told each trial's last
    value, COMPLETE even when ASHA stopped it (the --compare-told baseline). In tuner.make_searcher's place: a bench
    search has no prior (no extension, no warm start)."""
    from ray.tune.search.optuna import OptunaSearch

    from search_driver import tracking, tuner

    first = None if args.no_default_trial else [defaults]
    return OptunaSearch(sampler=tuner.make_sampler(args), points_to_evaluate=first,
                        **tracking.optuna_study(storage, args.name))  # fmt: skip


def run_strategy(bench, dataset, seed: int, scheduler: str, searcher: str, storage: str, defaults_only=False,
                 told_last: bool = False) -> dict:  # fmt: skip
    import ray

    from search_driver import tuner

    name = (
        f"{scheduler}-{searcher}-seed{seed}" + ("-defaults" if defaults_only else "") + ("-last" if told_last else "")
    )
    argv = [
        "--model", bench.model, "--data-dir", bench.data_dir, "--seed", str(seed), "--metric", bench.metric,
        "--max-epochs", str(bench.max_epochs), "--scheduler", scheduler, "--searcher", searcher,
        "--storage-path", storage, "--name", name, "--cpus-per-trial", str(bench.cpus_per_trial),
        "--num-samples", "1" if defaults_only else str(bench.num_samples),
    ]  # fmt: skip
    parsed = cli.parse_args(argv + ([] if defaults_only else ["--no-default-trial"]))
    args = Settings.of(parsed).changed(address=None)  # always a fresh local instance
    args = args.changed(**cli.model_defaults(args))
    space, defaults = get_space(args.model)
    start_ray(args)
    try:
        trainable = make_trainable(args, dataset.search_arrays())
        constants = {"model": args.model, "max_epochs": args.max_epochs, "seed": args.seed}
        write_json(join(storage, name, "experiment.json"), experiment_info(args, dataset, space))
        own = tuner.make_searcher
        tuner.make_searcher = rays_optuna_search if told_last else own
        try:
            fitted = build_tuner(args, trainable, {**space, **constants}, defaults, storage)
        finally:
            tuner.make_searcher = own
        slots = min(int(ray.cluster_resources()["CPU"] // args.cpus_per_trial), args.num_samples)
        t = time.perf_counter()
        fitted.fit()
        wall = time.perf_counter() - t
    finally:
        ray.shutdown()
    exp = load_experiment(join(storage, name))
    train_time = sum(float(df[M.EPOCH_SECONDS].sum()) for df in exp.curves.values())
    startup = [float(df["time_this_iter_s"].iloc[0] - df[M.EPOCH_SECONDS].iloc[0]) for df in exp.curves.values()]
    best = exp.best_row
    return {
        "strategy": "DEFAULTS alone"
        if defaults_only
        else f"{scheduler.upper()} + {searcher}" + (" (told last)" if told_last else ""),
        "seed": seed,
        "trials": len(exp.curves),
        "trial_epochs": sum(len(df) for df in exp.curves.values()),
        "wall_s": wall,
        "best_val_acc": max(float(df[M.VAL_ACC].max()) for df in exp.curves.values()),
        "best_trial_val_loss": float(best[M.VAL_LOSS]),
        "best_trial_epoch": int(best["training_iteration"]),
        "slots": slots,
        "overhead": 1 - train_time / (wall * slots),
        "mean_trial_startup_s": sum(startup) / len(startup),
        "rank_correlation": rank_correlation(exp) if scheduler == "fifo" and not defaults_only else None,
    }


def rank_correlation(exp) -> dict[int, float]:
    """Spearman's rho between val_loss at each epoch and the best val_loss of the whole run, over FIFO's trials."""
    import pandas as pd

    best = {tid: float(df[M.VAL_LOSS].min()) for tid, df in exp.curves.items()}
    out = {}
    for epoch in range(1, int(exp.info["args"]["max_epochs"]) + 1):
        at = {tid: float(df.loc[df["training_iteration"] == epoch, M.VAL_LOSS].iloc[0])
              for tid, df in exp.curves.items() if (df["training_iteration"] == epoch).any()}  # fmt: skip
        if len(at) >= 4:
            pair = pd.DataFrame({"at": at, "best": {t: best[t] for t in at}})
            out[epoch] = float(pair["at"].corr(pair["best"], method="spearman"))
    return out


def mean_std(values) -> str:
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def compare_told(bench, storage: str) -> dict:
    """TPE told the truth (best epoch; stopped trials PRUNED) vs told the last value, same seeds, side by side."""
    runs = []
    for seed in range(bench.seeds):
        dataset = load_dataset(bench.data_dir, seed=seed, subset=bench.subset)
        print(f"seed {seed}: {bench.model}, {bench.num_samples} trials x up to {bench.max_epochs} epochs; data "
              f"{dataset.summary()}; experiments in {storage}", flush=True)  # fmt: skip
        for told_last in (False, True):
            runs.append(run_strategy(bench, dataset, seed, "asha", "optuna", storage, told_last=told_last))
            r = runs[-1]
            print(f"  {r['strategy']:<28} trial-epochs {r['trial_epochs']:>4}  best val_acc {r['best_val_acc']:.4f}  "
                  f"best trial val_loss {r['best_trial_val_loss']:.4f}  wall {r['wall_s']:.0f} s", flush=True)  # fmt: skip
    by = {(r["strategy"], r["seed"]): r for r in runs}
    truth, last = "ASHA + optuna", "ASHA + optuna (told last)"
    seeds = range(bench.seeds)
    acc = [100 * (by[truth, s]["best_val_acc"] - by[last, s]["best_val_acc"]) for s in seeds]
    loss = [by[truth, s]["best_trial_val_loss"] - by[last, s]["best_trial_val_loss"] for s in seeds]
    epochs = [by[truth, s]["trial_epochs"] / by[last, s]["trial_epochs"] for s in seeds]
    print(f"\ntold the truth minus told the last value, {bench.seeds} seeds: best val_acc {mean_std(acc)} points, best "
          f"trial's val_loss {mean_std(loss)}, trial-epochs ratio {mean_std(epochs)}")  # fmt: skip
    return {"args": vars(bench), "runs": runs, "val_acc_points": acc, "val_loss_diff": loss, "epochs_ratio": epochs}


def main(argv=None) -> int:
    bench = parse_args(argv)
    storage = bench.storage_path or tempfile.mkdtemp(prefix="search-efficiency-")
    if bench.compare_told:
        out = compare_told(bench, storage)
        if bench.json:
            Path(bench.json).write_text(json.dumps(out, indent=2))
        return 0
    runs = []
    for seed in range(1 if bench.overhead_only else bench.seeds):
        dataset = load_dataset(bench.data_dir, seed=seed, subset=bench.subset)
        print(f"seed {seed}: {bench.model}, {bench.num_samples} trials x up to {bench.max_epochs} epochs; data "
              f"{dataset.summary()}; experiments in {storage}", flush=True)  # fmt: skip
        runs.append(run_strategy(bench, dataset, seed, "fifo", "random", storage))
        if not bench.overhead_only:
            runs.append(run_strategy(bench, dataset, seed, "asha", "optuna", storage))
            runs.append(run_strategy(bench, dataset, seed, "fifo", "random", storage, defaults_only=True))
        for r in runs[-3:]:
            print(f"  {r['strategy']:<16} trial-epochs {r['trial_epochs']:>4}  best val_acc {r['best_val_acc']:.4f}  "
                  f"wall {r['wall_s']:.0f} s", flush=True)  # fmt: skip

    print(f"\n{'strategy':<18}{'trials':>7}{'trial-epochs':>14}{'best val_acc':>20}{'overhead':>10}{'start-up s':>12}")
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        rs = [r for r in runs if r["strategy"] == strategy]
        print(f"{strategy:<18}{rs[0]['trials']:>7}{statistics.mean(r['trial_epochs'] for r in rs):>14.1f}"
              f"{mean_std(r['best_val_acc'] for r in rs):>20}{statistics.mean(r['overhead'] for r in rs):>10.1%}"
              f"{statistics.mean(r['mean_trial_startup_s'] for r in rs):>12.2f}")  # fmt: skip
    out = {"args": vars(bench), "runs": runs}
    if not bench.overhead_only:
        by = {(r["strategy"], r["seed"]): r for r in runs}
        seeds = range(bench.seeds)
        ratios = [by["ASHA + optuna", s]["trial_epochs"] / by["FIFO + random", s]["trial_epochs"] for s in seeds]
        gaps = [100 * (by["FIFO + random", s]["best_val_acc"] - by["ASHA + optuna", s]["best_val_acc"]) for s in seeds]
        above = [
            100 * (by["ASHA + optuna", s]["best_val_acc"] - by["DEFAULTS alone", s]["best_val_acc"]) for s in seeds
        ]
        rho = {}
        for s in seeds:
            for e, v in by["FIFO + random", s]["rank_correlation"].items():
                rho.setdefault(int(e), []).append(v)
        out.update(epochs_ratio=ratios, val_acc_gap_points=gaps, above_defaults_points=above,
                   rank_correlation={e: statistics.mean(v) for e, v in sorted(rho.items())})  # fmt: skip
        print(f"\nASHA + Optuna used {mean_std(ratios)} of FIFO + random's trial-epochs (target <= 0.33); its best "
              f"val_acc is {mean_std(gaps)} points below FIFO + random's (target <= 0.5) and {mean_std(above)} points "
              f"above DEFAULTS trained alone for {bench.max_epochs} epochs")  # fmt: skip
        print("Spearman rho, val_loss at epoch e vs the run's best (FIFO trials, mean over seeds):")
        print("  " + "  ".join(f"e{e}:{v:.2f}" for e, v in out["rank_correlation"].items()))
        # what other grace periods / reduction factors would have cost and found on the same FIFO curves
        fifo = [join(storage, f"fifo-random-seed{s}") for s in seeds]
        out["asha_replay"] = asha_replay.grid(fifo, [1, 2, 3], [3, 4], slots=by["FIFO + random", 0]["slots"])
        print("Ray's ASHA replayed on the FIFO curves (bench/asha_replay.py; random search, 50 start orders per seed):")
        asha_replay.print_grid(out["asha_replay"])
    if bench.json:
        Path(bench.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
