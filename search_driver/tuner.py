"""What Tune runs: the trainable and the resources each trial asks for (prepare_gpus settles the GPU share first),
the searcher (Optuna's TPE, or random search), the scheduler (ASHA, or FIFO), the plateau stopper, the Tuner that
holds them, and the record of it all that experiment.json keeps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from search_driver import ROOT
from search_driver.cli import UsageError


def prepare_gpus(args, space: dict, defaults: dict, constants: dict, data: dict) -> dict | None:
    """Before the search, on a GPU of the cluster: `auto` measures and picks the packing (returned, for
    experiment.json); a number checks that the trials' framework can use the GPU there."""
    from search_driver import gpu_packing
    from trainables.framework import framework_of

    if args.train_on_cpu or args.gpus_per_trial == 0:
        return None
    fw = framework_of(args.model)
    try:
        gpu_packing.check_gpu_usable(fw.name, 1 if args.gpus_per_trial == "auto" else args.gpus_per_trial)
        if args.gpus_per_trial != "auto":
            return None
        if not fw.measures_gpu_packing:
            raise UsageError(f"--gpus-per-trial auto measures torch models; give {args.model} a number (0.25, 0.5)")
        print("gpus-per-trial auto: measuring the largest config on a GPU...", flush=True)
        info = gpu_packing.auto_packing(space, defaults, constants, data)
    except gpu_packing.PackingError as e:
        raise UsageError(str(e)) from None
    print(gpu_packing.describe(info), flush=True)
    return {"requested": "auto", **info}


def trial_constants(args) -> dict:
    """The config keys every trial gets as they are, next to the searched ones."""
    from trainables.models import get_spec

    constants = {"model": args.model, "max_epochs": args.max_epochs, "seed": args.seed}
    spec = get_spec(args.model)
    if spec.kind in ("file", "module") and spec.framework:  # found by building it (cli.check_model): trials need not
        constants["framework"] = spec.framework
    if args.weights:
        constants["weights_path"] = args.weights
    if args.train_on_cpu:
        constants["device"] = "cpu"  # the trainables' override: no GPU needed for a GPU share
    return constants


def make_trainable(args, data_arrays: dict):
    from ray import tune

    from analysis.experiment import is_uri, join
    from trainables.tune_trial import train_trial  # one trainable: the model's framework does the rest

    # with_parameters puts the arrays in the object store once; every trial reads the same copy.
    resources = {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}
    # in-epoch progress files go to the trial folders when they are local (the console reads them there)
    progress_dir = None if is_uri(args.storage_path) else join(args.storage_path, args.name)
    return tune.with_resources(
        tune.with_parameters(train_trial, data=data_arrays, progress_dir=progress_dir), resources
    )


def make_stopper(args, experiment_path: str):
    """--patience N: plateau stopping on the search metric, next to (not instead of) ASHA."""
    if args.patience is None:
        return None
    from search_driver.stopping import PatienceStopper
    from trainables.metric_names import SEARCH_METRICS

    return PatienceStopper(args.metric, SEARCH_METRICS[args.metric], args.patience, experiment_path=experiment_path)


@dataclass
class Prior:
    """What a search starts from besides its space: an extension's earlier parts (search_driver/extend.py), or a
    warm start's evidence (search_driver/warm_start.py)."""

    part: int = 1  # 1: the first search of an experiment; 2, 3, ...: its extensions (the sampler's seed moves on)
    earlier_trials: list[str] = field(default_factory=list)  # trial folders of the earlier parts: ASHA's rungs
    evidence: list = field(default_factory=list)  # optuna FrozenTrials for a new study
    first: list[dict] | None = None  # the first configs; None: the space's DEFAULTS unless --no-default-trial


def make_scheduler(args, storage: str, earlier_trials: list[str] = ()):
    """ASHA (its rungs rebuilt from the result files on --resume and from the earlier parts' in an extension:
    search_driver/stopping.py), or FIFO."""
    from ray.tune.schedulers import FIFOScheduler

    from search_driver.stopping import ResumableASHA

    if args.scheduler != "asha":
        return FIFOScheduler()
    return ResumableASHA(
        storage_path=storage,
        earlier_trials=earlier_trials,
        time_attr="training_iteration",
        max_t=args.max_epochs,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
    )


def make_searcher(args, defaults: dict, storage: str, prior: Prior | None = None):
    """Optuna TPE told each trial's best epoch (search_driver/optuna_searcher.py), or Tune's random search."""
    from search_driver import tracking
    from search_driver.optuna_searcher import OptunaSearcher
    from search_driver.snapshots import BasicVariantGenerator

    prior = prior or Prior()
    first = prior.first
    if first is None:
        first = None if args.no_default_trial else [defaults]
    if args.searcher == "optuna":
        study = tracking.optuna_study(storage, args.name)  # a journal file optuna-dashboard reads live
        return OptunaSearcher(
            make_sampler(args, prior.part), args.max_epochs, points_to_evaluate=first, evidence=prior.evidence, **study
        )
    # the baseline of bench/search_efficiency.py: independent random draws from the same space (an extension's
    # seed moves on, or it would draw the first part's configs again)
    return BasicVariantGenerator(random_state=args.seed + prior.part - 1, points_to_evaluate=first)


def startup_trials(args) -> int:
    """TPE's random start: a quarter of the trials (at least 4, at most 10); 8 when a time budget sets the count."""
    return 8 if args.num_samples == -1 else max(4, min(10, args.num_samples // 4))


def make_sampler(args, part: int = 1):
    import optuna

    # constant_liar: trials running in parallel count as (pessimistically) finished, so TPE does not hand two
    # workers near-identical configs; multivariate: lr x batch size x weight decay are modelled jointly. An
    # extension's seed moves on, so its random draws are not the first part's again.
    return optuna.samplers.TPESampler(
        seed=args.seed + part - 1, multivariate=True, constant_liar=True, n_startup_trials=startup_trials(args)
    )


def search_record(args) -> dict:
    """What runs, in words, for experiment.json and report.md."""
    if args.searcher == "optuna":
        searcher = f"Optuna TPE (multivariate, constant liar, {startup_trials(args)} random start)"
    else:
        searcher = "random search"
    if args.scheduler == "asha":
        scheduler = (
            f"ASHA (grace {args.grace_period}, reduction factor {args.reduction_factor}, max {args.max_epochs} epochs)"
        )
    else:
        scheduler = f"FIFO (every trial {args.max_epochs} epochs)"
    return {
        "searcher": searcher,
        "scheduler": scheduler,
        "stopper": f"patience {args.patience}" if args.patience else None,
        "time_budget_min": args.time_budget,
        "num_samples": None if args.num_samples == -1 else args.num_samples,
        "first_trial": "none" if args.no_default_trial else "the space's DEFAULTS",
    }


def build_tuner(args, trainable, param_space: dict, defaults: dict, storage: str, prior: Prior | None = None):
    from ray import tune

    from analysis.experiment import join
    from search_driver import console, resume, tracking
    from search_driver.optuna_searcher import EndedTrials, OptunaSearcher
    from trainables.epoch_progress import trial_dirname
    from trainables.metric_names import SEARCH_METRICS

    prior = prior or Prior()
    searcher = make_searcher(args, defaults, storage, prior)
    ended = [EndedTrials(searcher)] if isinstance(searcher, OptunaSearcher) else []
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=args.metric,
            mode=SEARCH_METRICS[args.metric],
            search_alg=searcher,
            scheduler=make_scheduler(args, storage, prior.earlier_trials),
            num_samples=args.num_samples,
            max_concurrent_trials=args.max_concurrent,
            time_budget_s=args.time_budget * 60 if args.time_budget else None,
            trial_dirname_creator=lambda trial: trial_dirname(trial.trial_id),  # short, stable folder names
            # One worker process runs trial after trial: no new process, torch import or CUDA context per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=args.name,
            storage_path=storage,
            # 1: Tune forces an experiment snapshot every num_to_keep checkpoints of a trial, so with 1 the snapshot
            # always holds each trial's latest epoch (with 2 it can be one behind, and --resume trains that epoch
            # again). A snapshot naming a checkpoint deleted just before: trainables/tune_trial.newest_checkpoint.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            stop=make_stopper(args, join(storage, args.name)),
            # Tune's own output (a table with a column per config key) off: our console fits 120 columns
            verbose=0,
            callbacks=[
                console.console_callback(args, param_space),
                *tracking.tracking_callbacks(args, param_space),
                *ended,
                resume.max_failures_callback(join(storage, args.name)),
            ],
        ),
    )


def restore_tuner(args, trainable, path: str):
    """--resume: Tune's restore of the experiment at `path` (its unfinished and errored trials run again), retrying
    failed trials up to this call's --max-failures; the resume is recorded in experiment.json."""
    from ray import tune

    from search_driver import resume

    if not tune.Tuner.can_restore(path):
        raise UsageError(f"{path} has no Tune experiment state to resume from")
    tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    # the restored run's MaxFailures callback (resume.max_failures_callback) reads this when fit() starts
    resume.record(path, resume={"at": time.time(), "max_failures": args.max_failures})
    return tuner


def experiment_info(args, dataset, space: dict) -> dict:
    from analysis.experiment import git_sha, package_versions
    from search_spaces import describe
    from trainables.framework import framework_of
    from trainables.metric_names import SEARCH_METRICS
    from trainables.models.user import source_record

    return {
        "name": args.name,
        "model": args.model,
        "framework": framework_of(args.model).name,
        "model_source": source_record(args.model),  # a user's builder: its file and sha256; timm: name, version
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
            "num_files": dataset.num_files,
            "skipped": dataset.skipped,
        },
        "split_seed": args.seed,
        "search": search_record(args),
        "args": args.as_dict(),
        "search_space": describe(space),
        "git_sha": git_sha(ROOT),
        "packages": package_versions(),
    }
