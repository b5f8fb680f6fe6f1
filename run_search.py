"""Start or resume a hyperparameter search: Optuna (TPE) proposes configs, ASHA stops bad trials early, Ray Tune runs them.

    python run_search.py --model lenet5 --data-dir ../shared/data/cifar10 --time-budget 15
    python run_search.py --help  # every flag with its default, and more examples (search_driver/cli.py)

main() is the story of a search, each step from search_driver/: the arguments, parsed and checked (cli.py); the
data and the search space; Ray started or joined, waiting for the cluster to fit a trial (cluster.py); what an epoch
costs here and what the budget buys (plan.py); the Tuner built or restored and run (tuner.py); what it found, or
what an interrupt kept (summary.py). A finished experiment is extended by a new Tuner in its folder (extend.py); a
new one may start from an old one's trials (warm_start.py). Exit 0; 2 for bad input (one line); 1 when no trial
reported a result.

Results: <storage-path>/<name>/ holds Ray's trial folders (result.json, progress.csv, checkpoints) and
experiment.json (model, data, split seed, arguments, search space, git sha, package versions).
"""

from __future__ import annotations

import sys
import time

from search_driver import ray_compat
from search_driver.cli import (
    SMOKE_RESOLUTION,
    SMOKE_SUBSET,
    UsageError,
    check_model,
    fix_resolution,
    given_flags,
    parse_args,
    settle,
)
from search_driver.cluster import check_one_gpu_per_trial, check_resources, start_ray
from search_driver.lr_find import first_config, run_lr_finder, search_lr_around
from search_driver.plan import plan_search, settings_changes
from search_driver.summary import print_interrupted, print_summary
from search_driver.tuner import (
    Prior,
    build_tuner,
    experiment_info,
    make_trainable,
    prepare_gpus,
    restore_tuner,
    trial_constants,
)

ray_compat.before_importing_tune()  # Tune reads some of its settings when ray.tune is first imported


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check_cluster:  # before `ray up`: what the launcher needs here, nothing else
        from search_driver import cluster_preflight

        return cluster_preflight.main(args.check_cluster)
    from analysis.experiment import EXPERIMENT_FILE, exists, join, write_json
    from analysis.shell import error_lines
    from image_data.cache import DataError
    from search_driver import extend, resume, warm_start
    from search_driver.data import load_search_data
    from search_driver.interrupts import StopSignals
    from trainables.models import UnknownModelError

    stop, path = StopSignals(), None
    try:
        # The settings, read-only from here: --resume's saved arguments, --smoke-test's sizes, the defaults that
        # depend on other flags, every check that can fail in one line before data loading and Ray (cli.settle).
        given = given_flags(argv)
        args = settle(args, given)
        extending = bool(args.resume and args.extend)
        path = join(args.storage_path, args.name)
        if not args.resume and not args.lr_find and exists(join(path, EXPERIMENT_FILE)):
            raise UsageError(
                f"experiment {args.name} exists under {args.storage_path}: `--resume {args.name}` "
                "continues or extends it; give a new search another --name"
            )
        old = warm_start.source(args) if args.warm_start and not args.resume else None  # one line each, now

        # The data, the search space and the constants every trial gets.
        subset = args.subset or (SMOKE_SUBSET if args.smoke_test else None)
        dataset = load_search_data(args, subset, SMOKE_RESOLUTION)
        args = args.changed(image_size=int(dataset.source["image_size"]))  # so --resume decodes the same
        print(f"data: {dataset.summary()}", flush=True)
        from search_spaces import get_space, space_note

        space, defaults = get_space(args.model)
        fix_resolution(args, space, defaults)
        if note := space_note(args.model):  # a model without a space of its own searches the shared one
            print(note, flush=True)
        # a user's model: built once and fed a dummy batch here, before Ray (one line naming the file otherwise)
        first = first_config(space, defaults, trial_constants(args))
        check_model(args, dataset.num_classes, int(dataset.x_train.shape[-1]), space, first)
        constants = trial_constants(args)
        finder = None
        if args.lr_find or (args.lr_range_from_finder and not args.resume):
            finder = run_lr_finder(args, dataset.search_arrays(), first_config(space, defaults, constants), path)
            if args.lr_find:
                return 0
            search_lr_around(finder["suggested_lr"], space, defaults)
        if extending:
            extend.check_space(args, path, space, defaults)
        warm = warm_start.prepare(args, {**space, **constants}, *old) if old else None

        # Ray, and a cluster that can run a trial (now, or once the autoscaler adds a node).
        from search_driver.console import quiet_ray_output

        quiet_ray_output()  # our console (build_tuner's callbacks) instead of Ray's wide table
        start_ray(args)
        check_resources(args)
        check_one_gpu_per_trial(args)
        packing = None if args.resume else prepare_gpus(args, space, defaults, constants, dataset.search_arrays())
        if packing:  # saved in experiment.json's args: --resume packs the same
            args = args.changed(gpus_per_trial=packing["gpu_fraction"])
        # What an epoch costs here, and what the budget buys with it (search_driver/plan.py): horizon, rungs, threads,
        # the affordable part of the space and the first trial; one line and exit 2 if nothing is affordable.
        plan = None if args.resume else plan_search(args, space, defaults, constants, dataset.search_arrays(), given)
        if plan:  # the horizon, rungs and threads it chose (flags given on the command line stay)
            args = args.changed(**settings_changes(plan))
        constants = trial_constants(args)  # the plan's horizon
        trainable = make_trainable(args, dataset.search_arrays())

        # The search: a new experiment is recorded in experiment.json first; a resumed one continues Tune's state.
        with stop:  # Ctrl-C / SIGTERM: Tune stops gracefully, we say so (search_driver/interrupts.py)
            if args.resume and not extending:
                tuner = restore_tuner(args, trainable, path)
            else:
                if extending:  # a new Tune run in the same folder, after the earlier parts
                    prior = extend.begin(args, path)
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
                    prior = None
                    if warm:  # its first trials are the old best configs, not DEFAULTS
                        info["warm_start"] = warm.record
                        info["search"]["first_trial"] = f"the {len(warm.first)} best configs of {warm.record['from']}"
                        prior = Prior(evidence=warm.evidence, first=warm.first)
                    elif not args.no_default_trial:  # so the summary and the report can say whether it beat them
                        info["search"]["first_trial_config"] = defaults
                    write_json(join(path, EXPERIMENT_FILE), info)
                tuner = build_tuner(args, trainable, {**space, **constants}, defaults, args.storage_path, prior)
            from search_driver.tracking import watch_hint

            print(watch_hint(args, path), flush=True)
            results = tuner.fit()

        # What it found, or what an interrupt kept and how to resume it.
        if stop.received:
            print_interrupted(args, path, stop)
            return stop.exit_code
        resume.record(path, finished_at=time.time())
        # every part of an extended experiment; 1 when no trial reported a result
        return 0 if print_summary(extend.results(path, results, args), args, path) else 1
    except (UsageError, UnknownModelError, DataError, resume.ResumeError) as e:
        print(error_lines(str(e)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print_interrupted(args, path, stop)
        return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
