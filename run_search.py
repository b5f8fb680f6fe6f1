"""Start or resume a hyperparameter search: Optuna (TPE) proposes configs, ASHA stops bad trials early, Ray Tune runs them.

    # LeNet-5 on an image folder (or a CIFAR-10 root with cifar-10-batches-py/), 8 trials of up to 10 epochs
    python run_search.py --model lenet5 --data-dir ../shared/data/cifar10 --num-samples 8 --max-epochs 10

    # seconds-long check on a tiny subset, 2 trials x 2 epochs
    python run_search.py --model lenet5 --data-dir DIR --smoke-test

    # continue an interrupted experiment (finished trials are not re-run)
    python run_search.py --resume --name lenet5-20261121-120000

    # on a Ray cluster, 4 trials per GPU
    python run_search.py --model resnet18 --data-dir DIR --address auto --gpus-per-trial 0.25

Results: <storage-path>/<name>/ holds Ray's trial folders (result.json, progress.csv, checkpoints) and
experiment.json (model, data, split seed, arguments, search space, git sha, package versions).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SMOKE_SUBSET = 512  # training images kept by --smoke-test


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="lenet5", help="a registered model (default lenet5)")
    g.add_argument("--data-dir", default="data", help="image folder (train/<class>/, test/<class>/) or CIFAR-10 root")
    g.add_argument(
        "--cache-dir", default=None, help="decoded-array cache (default $CIFAR_TUNE_CACHE or ~/.cache/cifar-tune)"
    )
    g.add_argument("--seed", type=int, default=0, help="train/val split, sampler and trial seed")
    g = p.add_argument_group("search")
    g.add_argument("--num-samples", type=int, default=16, help="trials to run")
    g.add_argument("--max-epochs", type=int, default=20, help="epochs of a trial that ASHA never stops (ASHA max_t)")
    g.add_argument("--grace-period", type=int, default=1, help="epochs every trial gets before ASHA may stop it")
    g.add_argument("--reduction-factor", type=int, default=4, help="ASHA keeps 1/this of the trials at each rung")
    g.add_argument("--metric", default="val_loss", choices=["val_loss", "val_acc"], help="what the search optimises")
    g.add_argument("--smoke-test", action="store_true", help=f"{SMOKE_SUBSET} training images, 2 trials, 2 epochs")
    g = p.add_argument_group("resources")
    g.add_argument("--cpus-per-trial", type=float, default=1)
    g.add_argument("--gpus-per-trial", type=float, default=0, help="fractions pack trials: 0.25 = 4 trials per GPU")
    g.add_argument("--max-concurrent", type=int, default=None, help="cap on trials running at once")
    g.add_argument("--max-failures", type=int, default=0, help="retries of a failed trial, from its last checkpoint")
    g = p.add_argument_group("experiment and cluster")
    g.add_argument("--storage-path", default="experiments", help="local folder or s3:// / gs:// URI")
    g.add_argument("--name", default=None, help="experiment name (default <model>-<timestamp>)")
    g.add_argument(
        "--resume", action="store_true", help="continue the experiment --name (its saved arguments are used)"
    )
    g.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="join a Ray cluster (default: RAY_ADDRESS, else a fresh local instance)",
    )
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local instance (default: all)")
    g.add_argument(
        "--local-gpus",
        type=float,
        default=None,
        help="logical GPUs of the local instance (testing scheduling without CUDA)",
    )
    return p.parse_args(argv)  # fmt: skip


def check_args(args) -> None:
    from trainables.models import get_spec

    get_spec(args.model)  # UnknownModelError names the known models
    for name in ("num_samples", "max_epochs", "grace_period", "reduction_factor"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    if args.grace_period > args.max_epochs:
        raise UsageError(f"--grace-period {args.grace_period} exceeds --max-epochs {args.max_epochs}")
    if args.cpus_per_trial <= 0:
        raise UsageError("--cpus-per-trial must be positive")
    if args.gpus_per_trial < 0 or (args.gpus_per_trial > 1 and args.gpus_per_trial != int(args.gpus_per_trial)):
        raise UsageError("--gpus-per-trial must be a fraction of one GPU (0.25, 0.5) or a whole number of GPUs")
    if args.resume and not args.name:
        raise UsageError("--resume needs --name NAME of the experiment to continue")


def apply_smoke_test(args) -> None:
    if args.smoke_test:
        args.num_samples, args.max_epochs, args.grace_period = 2, 2, 1


# ---------------------------------------------------------------------------------------------------------------
# Ray


def start_ray(args) -> None:
    import ray

    kwargs = dict(logging_level=logging.WARNING, include_dashboard=False)
    if args.address:
        ray.init(address=args.address, runtime_env={"working_dir": str(ROOT), "excludes": _EXCLUDES}, **kwargs)
    else:
        # address="local": never join a stale cluster recorded in /tmp/ray. Workers import our packages from ROOT.
        ray.init(
            address="local", num_cpus=args.num_cpus, num_gpus=args.local_gpus,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}}, **kwargs,
        )  # fmt: skip


_EXCLUDES = [".git", "data", "experiments", "results", ".venv", "__pycache__", "*.npz", "*.pth"]


def check_resources(args) -> None:
    """Fail at once, in one line, for a request no node can ever satisfy (Tune would leave it PENDING forever)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    max_gpu = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    if args.gpus_per_trial > 0 and max_gpu < args.gpus_per_trial:
        raise UsageError(
            f"--gpus-per-trial {args.gpus_per_trial:g} asked, but no node of the Ray cluster has "
            f"{'GPUs' if max_gpu == 0 else f'{args.gpus_per_trial:g} GPUs (largest: {max_gpu:g})'}; "
            "use --gpus-per-trial 0 on CPU or --address a cluster with GPU nodes"
        )
    if args.cpus_per_trial > max_cpu:
        raise UsageError(f"--cpus-per-trial {args.cpus_per_trial:g} exceeds the largest node's {max_cpu:g} CPUs")


def make_trainable(args, data_arrays: dict):
    from ray import tune

    from trainables.models import get_spec

    spec = get_spec(args.model)
    if spec.framework == "torch":
        from trainables.torch_trainable import train_torch as fn
    else:
        raise UsageError(f"model {args.model!r} needs the {spec.framework} trainable, which is not available")
    # with_parameters puts the arrays in the object store once; every trial reads the same copy.
    resources = {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(fn, data=data_arrays), resources)


def build_tuner(args, trainable, param_space: dict, defaults: dict, storage: str):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from trainables.metrics import SEARCH_METRICS

    mode = SEARCH_METRICS[args.metric]
    searcher = OptunaSearch(
        sampler=optuna.samplers.TPESampler(seed=args.seed, multivariate=True),
        points_to_evaluate=[defaults],
    )
    scheduler = ASHAScheduler(
        time_attr="training_iteration", max_t=args.max_epochs,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor,
    )  # fmt: skip
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=args.metric, mode=mode, search_alg=searcher, scheduler=scheduler,
            num_samples=args.num_samples, max_concurrent_trials=args.max_concurrent,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",  # short, stable folder names
        ),
        run_config=tune.RunConfig(
            name=args.name, storage_path=storage,
            # 2, not 1: with num_to_keep=k Tune forces an experiment snapshot every k checkpoints of a trial.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            verbose=1,
        ),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# main


def experiment_info(args, dataset, space: dict) -> dict:
    from analysis.experiment import git_sha, package_versions
    from search_spaces import describe
    from trainables.metrics import SEARCH_METRICS
    from trainables.models import get_spec

    return {
        "name": args.name,
        "model": args.model,
        "framework": get_spec(args.model).framework,
        "metric": args.metric,
        "mode": SEARCH_METRICS[args.metric],
        "started_at": time.time(),
        "data": {
            **dataset.source,
            "classes": dataset.classes,
            "num_train": int(len(dataset.y_train)),
            "num_val": int(len(dataset.y_val)),
            "num_test": int(len(dataset.y_test)),
            "mean": dataset.mean,
            "std": dataset.std,
        },
        "split_seed": args.seed,
        "args": vars(args),
        "search_space": describe(space),
        "git_sha": git_sha(ROOT),
        "packages": package_versions(),
    }


def restore_args(args) -> argparse.Namespace:
    """--resume: take the experiment's own arguments, keeping only this call's cluster/resource options."""
    from analysis.experiment import EXPERIMENT_FILE, exists, join, read_json

    path = join(args.storage_path, args.name)
    info_path = join(path, EXPERIMENT_FILE)
    if not exists(info_path):
        raise UsageError(f"no experiment {args.name!r} to resume: {info_path} does not exist")
    saved = read_json(info_path)["args"]
    keep = {"resume", "address", "num_cpus", "local_gpus", "storage_path", "max_failures"}
    for key, value in saved.items():
        if key not in keep:
            setattr(args, key, value)
    return args


def print_summary(results, args, path: str) -> None:
    from trainables import metrics as M

    df = results.get_dataframe()
    if df.empty or args.metric not in df:
        print(f"\nNo trial reported a result. Experiment: {path}")
        return
    ascending = args.metric == M.VAL_LOSS
    df = df.sort_values(args.metric, ascending=ascending)
    cfg_cols = [c for c in df.columns if c.startswith("config/") and df[c].nunique(dropna=False) > 1]
    cols = ["trial_id", M.VAL_ACC, M.VAL_LOSS, M.EPOCH, *cfg_cols]
    table = df[cols].head(5).rename(columns=lambda c: c.removeprefix("config/"))
    print(f"\nBest trials by {args.metric} (last reported epoch), {len(df)} trials, {results.num_errors} errors:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nExperiment: {path}\nReport: python report.py --experiment {path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    from analysis.experiment import EXPERIMENT_FILE, join, normalize_storage_path, write_json
    from trainables.data import DataError, load_dataset
    from trainables.models import UnknownModelError

    try:
        args.storage_path = normalize_storage_path(args.storage_path)
        if args.resume:
            restore_args(args)
        apply_smoke_test(args)
        check_args(args)
        if args.gpus_per_trial > 0 and not args.address and not args.local_gpus:
            import torch

            if torch.cuda.device_count() == 0:
                raise UsageError(
                    f"--gpus-per-trial {args.gpus_per_trial:g} asked, but this machine has no CUDA GPU; "
                    "use --gpus-per-trial 0, or --address a cluster with GPU nodes"
                )
        args.name = args.name or f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        dataset = load_dataset(
            args.data_dir, seed=args.seed, cache_dir=args.cache_dir, subset=SMOKE_SUBSET if args.smoke_test else None
        )
        print(f"data: {dataset.summary()}", flush=True)

        from ray import tune

        from search_spaces import get_space

        space, defaults = get_space(args.model)
        constants = {"model": args.model, "max_epochs": args.max_epochs, "seed": args.seed}
        path = join(args.storage_path, args.name)

        start_ray(args)
        check_resources(args)
        trainable = make_trainable(args, dataset.search_arrays())
        if args.resume:
            if not tune.Tuner.can_restore(path):
                raise UsageError(f"{path} has no Tune experiment state to resume from")
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            write_json(join(path, EXPERIMENT_FILE), experiment_info(args, dataset, space))
            tuner = build_tuner(args, trainable, {**space, **constants}, defaults, args.storage_path)
        results = tuner.fit()
        print_summary(results, args, path)
        return 0
    except (UsageError, UnknownModelError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: python run_search.py --resume --name {args.name}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
