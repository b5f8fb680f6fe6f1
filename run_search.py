"""Start or resume a hyperparameter search: Optuna (TPE) proposes configs, ASHA stops bad trials early, Ray Tune runs them.

    python run_search.py --model lenet5 --data-dir ../shared/data/cifar10 --time-budget 15
    python run_search.py --help  # every flag with its default, and more examples (search_driver/cli.py)

main() is the story of a search, each step from search_driver/: the arguments, parsed and checked (cli.py); the
data and the search space; Ray started or joined, waiting for the cluster to fit a trial (cluster.py); what an epoch
costs here and what the budget buys (plan.py); the Tuner built or restored and run (tuner.py); what it found, or
what an interrupt kept (summary.py). Exit 0; 2 for bad input (one line); 1 when no trial reported a result.

Results: <storage-path>/<name>/ holds Ray's trial folders (result.json, progress.csv, checkpoints) and
experiment.json (model, data, split seed, arguments, search space, git sha, package versions).
"""

from __future__ import annotations

import sys
import time

from search_driver.cli import (
    SMOKE_RESOLUTION,
    SMOKE_SUBSET,
    UsageError,
    apply_smoke_test,
    check_args,
    check_cuda_here,
    check_weights,
    fill_defaults,
    fix_resolution,
    given_flags,
    parse_args,
    restore_args,
)
from search_driver.cluster import check_one_gpu_per_trial, check_resources, start_ray
from search_driver.lr_find import first_config, run_lr_finder, search_lr_around
from search_driver.plan import plan_search
from search_driver.summary import print_interrupted, print_summary
from search_driver.tuner import (
    build_tuner,
    experiment_info,
    make_trainable,
    prepare_gpus,
    restore_tuner,
    trial_constants,
)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check_cluster:  # before `ray up`: what the launcher needs here, nothing else
        from search_driver import cluster_preflight

        return cluster_preflight.main(args.check_cluster)
    from analysis.experiment import EXPERIMENT_FILE, join, normalize_storage_path, write_json
    from image_data.cache import DataError
    from search_driver import resume
    from search_driver.data import load_search_data
    from search_driver.interrupts import StopSignals
    from trainables.models import UnknownModelError

    stop, path = StopSignals(), None
    try:
        # The arguments: --resume's saved ones, --smoke-test's sizes, the defaults that depend on other flags, then
        # every check that can fail in one line before data loading and Ray.
        args.storage_path = normalize_storage_path(args.storage_path)
        given = given_flags(argv)
        if args.resume:
            restore_args(args, given)
        apply_smoke_test(args)
        fill_defaults(args)
        check_args(args)
        args.train_on_cpu = args.train_on_cpu or bool(args.local_gpus)
        check_cuda_here(args)
        check_weights(args)  # offline without weights: one line now, before data loading and Ray
        args.name = args.name or f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"

        # The data, the search space and the constants every trial gets.
        subset = args.subset or (SMOKE_SUBSET if args.smoke_test else None)
        dataset = load_search_data(args, subset, SMOKE_RESOLUTION)
        print(f"data: {dataset.summary()}", flush=True)
        from search_spaces import get_space

        space, defaults = get_space(args.model)
        fix_resolution(args, space, defaults)
        constants = trial_constants(args)
        path = join(args.storage_path, args.name)
        finder = None
        if args.lr_find or (args.lr_range_from_finder and not args.resume):
            finder = run_lr_finder(args, dataset.search_arrays(), first_config(space, defaults, constants), path)
            if args.lr_find:
                return 0
            search_lr_around(finder["suggested_lr"], space, defaults)

        # Ray, and a cluster that can run a trial (now, or once the autoscaler adds a node).
        from search_driver.console import quiet_ray_output

        quiet_ray_output()  # our console (build_tuner's callbacks) instead of Ray's wide table
        start_ray(args)
        check_resources(args)
        check_one_gpu_per_trial(args)
        packing = None if args.resume else prepare_gpus(args, space, defaults, constants, dataset.search_arrays())
        # What an epoch costs here, and what the budget buys with it (search_driver/plan.py): horizon, rungs, threads,
        # the affordable part of the space and the first trial; one line and exit 2 if nothing is affordable.
        plan = None if args.resume else plan_search(args, space, defaults, constants, dataset.search_arrays(), given)
        constants = trial_constants(args)  # the plan's horizon
        trainable = make_trainable(args, dataset.search_arrays())

        # The search: a new experiment is recorded in experiment.json first; a resumed one continues Tune's state.
        with stop:  # Ctrl-C / SIGTERM: Tune stops gracefully, we say so (search_driver/interrupts.py)
            if args.resume:
                tuner = restore_tuner(args, trainable, path)
            else:
                info = experiment_info(args, dataset, space)
                if finder:
                    info["lr_finder"] = finder
                if packing:
                    info["gpu_packing"] = packing
                if plan:
                    info["plan"] = plan
                    first, dflt = plan.get("first_trial_class", {}), plan.get("defaults_class", {})
                    if first != dflt:
                        changed = ", ".join(f"{k} {v}" for k, v in first.items() if dflt.get(k) != v)
                        info["search"]["first_trial"] = f"the space's DEFAULTS with {changed} (the plan's)"
                if not args.no_default_trial:  # so the summary and the report can say whether the search beat it
                    info["search"]["first_trial_config"] = defaults
                write_json(join(path, EXPERIMENT_FILE), info)
                tuner = build_tuner(args, trainable, {**space, **constants}, defaults, args.storage_path)
            from search_driver.tracking import watch_hint

            print(watch_hint(args, path), flush=True)
            results = tuner.fit()

        # What it found, or what an interrupt kept and how to resume it.
        if stop.received:
            print_interrupted(args, path, stop)
            return stop.exit_code
        resume.record(path, finished_at=time.time())
        return 0 if print_summary(results, args, path) else 1
    except (UsageError, UnknownModelError, DataError, resume.ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print_interrupted(args, path, stop)
        return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
