"""Start or resume a hyperparameter search: Optuna (TPE) proposes configs, ASHA stops bad trials early, Ray Tune runs them.

    python run_search.py --model lenet5 --data-dir ../shared/data/cifar10 --time-budget 15
    python run_search.py --help  # every flag with its default, and more examples (search_driver/cli.py)

Results: <storage-path>/<name>/ holds Ray's trial folders (result.json, progress.csv, checkpoints) and
experiment.json (model, data, split seed, arguments, search space, git sha, package versions).
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import time

from search_driver.cli import (
    SMOKE_LR_FIND_ITERS,
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
from search_driver.tuner import build_tuner, experiment_info, make_trainable, prepare_gpus

LR_FIND_PLOT = "lr_find.png"  # in the experiment folder


def error_causes(results) -> dict[str, int]:
    """The errored trials' causes, each once: the exception's last line (e.g. "GPUUnavailableError: this trial holds
    0.25 GPU but ...") -> how many trials ended with it. Tune logs each failure's traceback as it happens; this
    is the summary a reader needs."""
    causes: dict[str, int] = {}
    for result in results:
        if result.error is None:
            continue
        lines = [ln.strip() for ln in str(result.error).splitlines() if ln.strip()]
        cause = lines[-1] if lines else type(result.error).__name__
        cause = re.sub(r"^(?:\w+\.)+(\w+: )", r"\1", cause)  # trainables.gpu_share.GPUUnavailableError: -> its name
        causes[cause] = causes.get(cause, 0) + 1
    return causes


def print_summary(results, args, path: str) -> None:
    from analysis.experiment import EXPERIMENT_FILE, join, read_json
    from analysis.trials import versus_first_trial
    from trainables import metrics as M

    for cause, n in error_causes(results).items():
        print(f"{n} trial{'s' if n > 1 else ''} failed: {cause}"[:300], file=sys.stderr)
    mode = M.SEARCH_METRICS[args.metric]
    # Each trial's best epoch (the one rule for "best": analysis/trials.py), not its last.
    df = results.get_dataframe(filter_metric=args.metric, filter_mode=mode)
    if df.empty or args.metric not in df:
        print(f"\nNo trial reported a result. Experiment: {path}")
        return
    df = df.sort_values(args.metric, ascending=mode == "min")
    cfg_cols = [c for c in df.columns if c.startswith("config/") and df[c].nunique(dropna=False) > 1]
    cols = ["trial_id", M.VAL_ACC, M.VAL_LOSS, M.EPOCH, *cfg_cols]
    table = df[cols].head(5).rename(columns=lambda c: c.removeprefix("config/"))
    print(f"\nBest trials by {args.metric} (best epoch of each), {len(df)} trials, {results.num_errors} errors:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", line_width=120))  # wraps, 120 columns
    first = (read_json(join(path, EXPERIMENT_FILE)).get("search") or {}).get("first_trial_config")
    configs = {r.trial_id: {k.removeprefix("config/"): r[k] for k in df.columns if k.startswith("config/")}
               for _, r in df.iterrows()}  # fmt: skip
    line = versus_first_trial(configs, dict(zip(df.trial_id, df[args.metric], strict=True)), first, args.metric, mode)
    if line:
        print(textwrap.fill(line[0].upper() + line[1:], 120))
    print(f"\nExperiment: {path}\nReport: python report.py --experiment {path}")


def print_interrupted(args, path: str | None, stop) -> None:
    """What an interrupt kept, and the command that continues it."""
    import signal

    from analysis.experiment import normalize_storage_path
    from search_driver.resume import progress

    how = signal.Signals(stop.received).name if stop.received else "SIGINT"
    p = progress(path) if path else None
    if p is None:
        print(f"\ninterrupted ({how}) before the search started; nothing to resume", file=sys.stderr)
        return
    cmd = f"python run_search.py --resume --name {args.name}"
    if args.storage_path != normalize_storage_path("experiments"):
        cmd += f" --storage-path {args.storage_path}"
    if args.address:
        cmd += f" --address {args.address}"
    print(f"\ninterrupted ({how}): {p.finished} of {p.num_samples} trials finished, {p.trials - p.finished - p.errored}"
          f" stopped mid-way or pending; everything so far is kept in {path}\nresume with: {cmd}",
          file=sys.stderr, flush=True)  # fmt: skip


def run_lr_finder(args, data: dict, config: dict, path: str) -> dict:
    """The LR range test on the first config, in this process (CUDA if this machine has it); plot into `path`."""
    import io

    import torch

    from analysis.experiment import filesystem, join
    from trainables.lr_finder import NUM_ITER, LRFindError, lr_range_test
    from trainables.torch_trainable import setup_device

    device = setup_device(cpus=args.num_cpus or os.cpu_count() or 1, gpu_fraction=float(torch.cuda.is_available()))
    iters = SMOKE_LR_FIND_ITERS if args.smoke_test else NUM_ITER
    print(f"LR range test: {args.model} on {device.type}, {iters} steps", flush=True)
    try:
        result = lr_range_test(config, data, device=device, num_iter=iters)
    except LRFindError as e:
        raise UsageError(str(e)) from None
    plot = join(path, LR_FIND_PLOT)
    fs, p = filesystem(plot)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    png = io.BytesIO()
    result.figure.savefig(png, format="png", dpi=120, bbox_inches="tight")
    with fs.open_output_stream(p) as f:
        f.write(png.getvalue())
    early = ", stopped early: the loss diverged" if result.stopped_early else ""
    print(
        f"suggested lr: {result.suggested_lr:.3g} (middle of the loss's longest fall{early}); plot: {plot}", flush=True
    )
    return {"suggested_lr": result.suggested_lr, "plot": plot, "steps": len(result.lrs)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check_cluster:
        from search_driver import cluster_preflight

        return cluster_preflight.main(args.check_cluster)
    from analysis.experiment import EXPERIMENT_FILE, join, normalize_storage_path, write_json
    from search_driver import resume
    from search_driver.data import load_search_data
    from search_driver.interrupts import StopSignals
    from trainables.data import DataError
    from trainables.models import UnknownModelError

    stop, path = StopSignals(), None
    try:
        args.storage_path = normalize_storage_path(args.storage_path)
        if args.resume:
            restore_args(args, given_flags(argv))
        apply_smoke_test(args)
        fill_defaults(args)
        check_args(args)
        args.train_on_cpu = getattr(args, "train_on_cpu", False) or bool(args.local_gpus)
        check_cuda_here(args)
        check_weights(args)  # offline without weights: one line now, before data loading and Ray
        args.name = args.name or f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        subset = getattr(args, "subset", None) or (SMOKE_SUBSET if args.smoke_test else None)
        dataset = load_search_data(args, subset, SMOKE_RESOLUTION)
        print(f"data: {dataset.summary()}", flush=True)

        from ray import tune
        from ray.tune.search.sample import Domain

        from search_spaces import get_space

        space, defaults = get_space(args.model)
        fix_resolution(args, space, defaults)
        constants = {"model": args.model, "max_epochs": args.max_epochs, "seed": args.seed}
        if args.weights:
            constants["weights_path"] = args.weights
        if args.train_on_cpu:
            constants["device"] = "cpu"  # the trainables' override: no GPU needed for a GPU share
        path = join(args.storage_path, args.name)
        finder = None
        if args.lr_find or (args.lr_range_from_finder and not args.resume):
            fixed = {k: v for k, v in space.items() if not isinstance(v, Domain)}
            finder = run_lr_finder(args, dataset.search_arrays(), {**fixed, **defaults, **constants}, path)
            if args.lr_find:
                return 0
            from trainables.lr_finder import centred_lr_range

            low, high = centred_lr_range(finder["suggested_lr"])
            space["lr"], defaults["lr"] = tune.loguniform(low, high), finder["suggested_lr"]
            print(f"searching lr in [{low:.3g}, {high:.3g}] (log-uniform), first trial at {defaults['lr']:.3g}")

        from search_driver.console import quiet_ray_output

        quiet_ray_output()  # our console (build_tuner's callbacks) instead of Ray's wide table
        start_ray(args)
        check_resources(args)
        check_one_gpu_per_trial(args)
        packing = None if args.resume else prepare_gpus(args, space, defaults, constants, dataset.search_arrays())
        trainable = make_trainable(args, dataset.search_arrays())
        with stop:  # Ctrl-C / SIGTERM: Tune stops gracefully, we say so (search_driver/interrupts.py)
            if args.resume:
                if not tune.Tuner.can_restore(path):
                    raise UsageError(f"{path} has no Tune experiment state to resume from")
                tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
                resume.set_max_failures(tuner, args.max_failures)
                resume.record(path, resume={"at": time.time(), "max_failures": args.max_failures})
            else:
                info = experiment_info(args, dataset, space)
                if finder:
                    info["lr_finder"] = finder
                if packing:
                    info["gpu_packing"] = packing
                if not args.no_default_trial:  # so the summary and the report can say whether the search beat it
                    info["search"]["first_trial_config"] = defaults
                write_json(join(path, EXPERIMENT_FILE), info)
                tuner = build_tuner(args, trainable, {**space, **constants}, defaults, args.storage_path)
            from search_driver.tracking import watch_hint

            print(watch_hint(args, path), flush=True)
            results = tuner.fit()
        if stop.received:
            print_interrupted(args, path, stop)
            return stop.exit_code
        resume.record(path, finished_at=time.time())
        print_summary(results, args, path)
        return 0
    except (UsageError, UnknownModelError, DataError, resume.ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print_interrupted(args, path, stop)
        return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
