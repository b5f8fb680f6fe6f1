"""run_search.py's command line: the flags and their help, the defaults that depend on other flags, the checks
that fail in one line (UsageError, exit 2) before data loading or Ray, --smoke-test's sizes, and --resume's saved
arguments (search_driver/resume.py decides which experiment, whether it is continued or extended, and which flags
may differ)."""

from __future__ import annotations

import argparse
import os
import time

from analysis.settings import Settings

# The --help text: its first line is the description, the rest the examples under the model list.
USAGE = """Start or resume a hyperparameter search: Optuna (TPE) proposes configs, ASHA stops bad trials early, Ray Tune runs them.

    # LeNet-5 on an image folder (or a CIFAR-10 root with cifar-10-batches-py/): as many trials as 15 minutes allow
    python run_search.py --model lenet5 --data-dir ../shared/data/cifar10 --time-budget 15

    # seconds-long check on a tiny subset, 2 trials x 2 epochs
    python run_search.py --model lenet5 --data-dir DIR --smoke-test

    # continue an interrupted experiment (finished trials are not re-run): the latest unfinished one, or NAME
    python run_search.py --resume
    python run_search.py --resume lenet5-20261121-120000 --max-failures 2

    # extend a finished experiment: 30 more minutes (or 10 more trials) in the same folder and Optuna study
    python run_search.py --resume lenet5-20261121-120000 --time-budget 30

    # a new search (new data, --image-size, a changed space) whose TPE starts from a finished one's trials
    python run_search.py --model lenet5 --data-dir DIR --time-budget 15 --warm-start lenet5-20261121-120000

    # before `ray up cluster.yaml`: what the launcher needs here (boto3, credentials, region, ssh), one line each
    python run_search.py --check-cluster cluster.yaml

    # on a Ray cluster, 4 trials per GPU; or as many as fit, measured on a GPU first (docs/gpu.md)
    python run_search.py --model resnet18 --data-dir DIR --address auto --gpus-per-trial 0.25
    python run_search.py --model resnet18 --data-dir DIR --address auto --gpus-per-trial auto

    # fine-tune ImageNet-pretrained ResNet-18 (weights from the torch hub cache, or --weights PATH offline)
    python run_search.py --model resnet18_pretrained --data-dir DIR --gpus-per-trial 0.5

    # your own model: a builder function in a file (docs/own-model.md), or any timm architecture
    python run_search.py --model ~/mymodel/net.py:build --data-dir DIR --time-budget 15
    python run_search.py --model timm:resnet10t --data-dir DIR --time-budget 15

    # LR range test only (plot + suggested lr), or a search whose lr range is centred on its suggestion
    python run_search.py --model lenet5 --data-dir DIR --lr-find
    python run_search.py --model lenet5 --data-dir DIR --lr-range-from-finder
"""

SMOKE_SUBSET = 512  # training images kept by --smoke-test
SMOKE_RESOLUTION = 32  # input side of models that search `resolution` under --smoke-test (seconds on a CPU)
SMOKE_LR_FIND_ITERS = 30  # LR range test steps under --smoke-test


DEFAULT_NUM_SAMPLES = 16  # without --time-budget
# ASHA's first rung at max_epochs / GRACE_DIVISOR, not before epoch MIN_GRACE, 1/DEFAULT_REDUCTION_FACTOR promoted:
# a rung at epoch 1 lost FIFO's best trial too often (replays: docs/measurements.md#asha-first-rung-replays).
GRACE_DIVISOR = 20
MIN_GRACE = 2
DEFAULT_REDUCTION_FACTOR = 4


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


def gpus_arg(value: str) -> float | str:
    """--gpus-per-trial: a number, or "auto" (measure a trial's GPU memory, then pack; search_driver/gpu_packing)."""
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {value!r}") from None


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The epilog as written; each option's default appended unless it is None/False or the help names it."""

    def _get_help_string(self, action):
        text = action.help or ""
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if hidden or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def help_epilog() -> str:
    from analysis.shell import command
    from trainables.models import MODELS

    models = "\n".join(f"  {name:<21} {spec.description} [{spec.framework}]" for name, spec in MODELS.items())
    # the examples name the interpreter that is running (.venv/bin/python ...), so they work when pasted
    examples = USAGE.split("\n\n", 1)[1].replace("python run_search.py", command("run_search.py"))
    return f"models (--model):\n{models}\n{OWN_MODELS}\nexamples:\n{examples}"


# The user forms of --model (trainables/models/user.py); the --help text under the registered models.
OWN_MODELS = """  path/to/file.py:function  your own builder returning a torch nn.Module or a Keras model (framework found from
                        what it returns); the file may define SPACE / DEFAULTS / MAX_EPOCHS: docs/own-model.md
  package.module:function  the same, imported from the project root, the current directory or installed packages
  timm:NAME             any timm architecture, from scratch (the shared space); the names:
                        python -c "import timm; print(timm.list_models())"
  timm:NAME:pretrained  with timm's pretrained weights, fine-tuned (timm downloads them; offline: --weights PATH)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=USAGE.split("\n")[0], formatter_class=HelpFormatter, epilog=help_epilog())
    g = p.add_argument_group("model and data")
    g.add_argument(
        "--model",
        default="lenet5",
        help="one of the models listed below, your own path/to/file.py:function, or timm:NAME",
    )
    g.add_argument("--data-dir", default="data", help="image folder (train/<class>/, test/<class>/) or CIFAR-10 root")
    g.add_argument(
        "--cache-dir", default=None, help="decoded-array cache (default: $CIFAR_TUNE_CACHE or ~/.cache/cifar-tune)"
    )
    g.add_argument("--seed", type=int, default=0, help="train/val split, sampler and trial seed")
    g.add_argument(
        "--weights",
        default=None,
        metavar="PATH",
        help="pretrained models: a state dict file of the architecture (torchvision's, or timm's for "
        "timm:NAME:pretrained), instead of the torch hub / Hugging Face cache",
    )
    g.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="fix the input side of models that search it (resnet18_pretrained), e.g. 64 on a CPU",
    )
    g.add_argument(
        "--subset",
        type=int,
        default=None,
        metavar="N",
        help="keep N training images, stratified, at least one per class (val: a tenth as many, at least one per "
        f"class; test: all); --smoke-test keeps {SMOKE_SUBSET}",
    )
    g.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="N",
        help="image folders: store N x N images (shorter side resized to N, centre crop); default 32, or for "
        "resnet18_pretrained the folder's size up to the model's resolution. Costs N*N*3 bytes per image",
    )
    g.add_argument(
        "--strict-data",
        action="store_true",
        help="stop at any unreadable file (truncated, corrupt, not an image, ._*) instead of skipping it",
    )
    g.add_argument(
        "--download",
        action="store_true",
        help="download CIFAR-10 into --data-dir if it is not there (also done into an existing empty folder)",
    )
    g = p.add_argument_group("search")
    g.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="MINUTES",
        help="keep proposing trials until this much wall time is spent, then stop cleanly (Tune's time_budget_s)",
    )
    g.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help=f"trials to run (default {DEFAULT_NUM_SAMPLES}; with --time-budget: a cap, default none)",
    )
    g.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="epochs of a trial that ASHA never stops (ASHA max_t) and every trial's lr-schedule horizon "
        "(default: the model's, from its search space module)",
    )
    g.add_argument(
        "--grace-period",
        type=int,
        default=None,
        help=f"epochs every trial gets before ASHA may stop it (default: max-epochs / {GRACE_DIVISOR}, at least "
        f"{MIN_GRACE} when max-epochs allows)",
    )
    g.add_argument(
        "--reduction-factor",
        type=int,
        default=DEFAULT_REDUCTION_FACTOR,
        help="ASHA keeps 1/this of the trials at each rung",
    )
    g.add_argument("--metric", default="val_loss", choices=["val_loss", "val_acc"], help="what the search optimises")
    g.add_argument("--scheduler", default="asha", choices=["asha", "fifo"], help="fifo: no early stopping (baseline)")
    g.add_argument("--searcher", default="optuna", choices=["optuna", "random"], help="random: Tune's random search")
    g.add_argument("--no-default-trial", action="store_true", help="do not start from the space's DEFAULTS config")
    g.add_argument(
        "--warm-start",
        default=None,
        metavar="NAME",
        help="a new experiment that starts from a finished one (NAME under --storage-path, or its path): its trials "
        "that fit this space seed TPE, its best configs run first; NAME is only read (docs/first-run.md)",
    )
    g.add_argument(
        "--patience",
        type=int,
        default=None,
        metavar="N",
        help="stop a trial after N epochs without a better --metric (any model; the original Keras used 8)",
    )
    g.add_argument(
        "--smoke-test",
        action="store_true",
        help=f"{SMOKE_SUBSET} training images, 2 trials, 2 epochs (flags you give win)",
    )
    g = p.add_argument_group("learning-rate range test (torch models)").add_mutually_exclusive_group()
    g.add_argument(
        "--lr-find",
        action="store_true",
        help="run the LR range test on the first config, save the loss-vs-lr plot, print the suggested lr, stop",
    )
    g.add_argument(
        "--lr-range-from-finder",
        action="store_true",
        help="run the LR range test, then search lr in [suggested/10, suggested*3]",
    )
    g = p.add_argument_group("resources")
    g.add_argument("--cpus-per-trial", type=float, default=1, help="CPUs per trial; its torch threads too")
    g.add_argument(
        "--gpus-per-trial",
        type=gpus_arg,
        default=0,
        help="fractions pack trials: 0.25 = 4 per GPU; auto = measure on a GPU, pack as many as fit (docs/gpu.md)",
    )
    g.add_argument(
        "--train-on-cpu",
        action="store_true",
        help="trials train on the CPU even when they hold a GPU share: testing GPU scheduling on logical GPUs "
        "(implied by --local-gpus)",
    )
    g.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="cap on trials running at once (default: as many as the CPUs/GPUs fit)",
    )
    g.add_argument("--max-failures", type=int, default=0, help="retries of a failed trial, from its last checkpoint")
    g = p.add_argument_group("tracking (Optuna dashboard and TensorBoard need no flag: see docs/live.md)")
    g.add_argument(
        "--mlflow",
        default=None,
        metavar="URI",
        help="log every trial to MLflow, e.g. sqlite:///mlflow.db, file:///tmp/mlruns or http://host:5000",
    )
    g = p.add_argument_group("experiment and cluster")
    g.add_argument("--storage-path", default="experiments", help="local folder or s3:// / gs:// URI")
    g.add_argument("--name", default=None, help="experiment name (default: <model>-<timestamp>)")
    g.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="NAME",
        help="continue NAME (or --name), or else the latest unfinished experiment, with its saved arguments; only "
        "--max-failures and cluster/resource flags (--address, --num-cpus, --local-gpus) may differ. A finished "
        "NAME with --time-budget M or --num-samples N is extended: M more minutes, N more trials",
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
    g.add_argument(
        "--check-cluster",
        default=None,
        metavar="CLUSTER_YAML",
        help="check what `ray up CLUSTER_YAML` needs on this machine (boto3, credentials, region, ssh), then exit",
    )
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def given_flags(argv=None) -> set[str]:
    """The options this command line sets itself (not left at their defaults): --resume compares only those."""
    parser, unset = build_parser(), object()
    parser.set_defaults(**{dest: unset for dest in vars(parser.parse_args(argv))})
    return {dest for dest, value in vars(parser.parse_args(argv)).items() if value is not unset}


def settle(args: argparse.Namespace, given: set[str]) -> Settings:
    """The search's settings, built once from the parsed flags: a resume's saved arguments, --smoke-test's sizes, the
    defaults that depend on other flags, the weights' absolute path, the experiment's name; every check that can fail
    in one line runs here, before data loading and Ray. Nothing writes the result: the stages after it hand back what
    they decide (the image size, the GPU share, the plan) and run_search.py makes a new one with `changed`."""
    from analysis.experiment import normalize_storage_path
    from trainables.models import model_slug
    from trainables.models.user import canonical

    s = Settings.of(args)
    # a user's file: its absolute path (trials run in other directories)
    s = s.changed(storage_path=normalize_storage_path(s.storage_path), model=canonical(s.model))
    if s.resume:
        s = s.changed(**restored(s, given))  # adds `extend`: a finished experiment given a new budget
    s = s.changed(**smoke_sizes(s, given))
    s = s.changed(**model_defaults(s))
    check_args(s)
    s = s.changed(train_on_cpu=s.train_on_cpu or bool(s.local_gpus))
    check_cuda_here(s)
    s = s.changed(**weights_path(s))  # offline without weights: one line now, before data loading and Ray
    return s.changed(name=s.name or f"{model_slug(s.model)}-{time.strftime('%Y%m%d-%H%M%S')}")


def model_defaults(args) -> dict:
    """Defaults that depend on the model or on other flags (kept None by argparse so experiment.json shows both)."""
    from search_spaces import get_max_epochs
    from trainables.models import get_spec

    get_spec(args.model)  # an unknown model: UnknownModelError (one line) before its space is looked up
    filled = {}
    if args.num_samples is None:
        filled["num_samples"] = -1 if args.time_budget else DEFAULT_NUM_SAMPLES  # -1: Tune's "until stopped"
    max_epochs = args.max_epochs if args.max_epochs is not None else get_max_epochs(args.model)
    if args.max_epochs is None:
        filled["max_epochs"] = max_epochs
    if args.grace_period is None:
        filled["grace_period"] = default_grace(max_epochs)
    return filled


def default_grace(max_epochs: int) -> int:
    """ASHA's first rung for a horizon: max_epochs / GRACE_DIVISOR, at least MIN_GRACE epochs, except in runs too
    short for it (a 2- or 3-epoch smoke test keeps a rung at 1)."""
    return max(1, min(MIN_GRACE, max_epochs // 2), max_epochs // GRACE_DIVISOR)


def check_args(args) -> None:
    from trainables.models import get_spec

    get_spec(args.model)  # UnknownModelError names the known models
    if args.time_budget is not None and args.time_budget <= 0:
        raise UsageError(f"--time-budget must be a positive number of minutes (got {args.time_budget:g})")
    if args.num_samples == -1 and not args.time_budget:
        raise UsageError("--num-samples -1 (no cap) needs --time-budget")
    for name in ("num_samples", "max_epochs", "grace_period", "reduction_factor"):
        if name == "num_samples" and args.num_samples == -1:
            continue
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    if args.grace_period > args.max_epochs:
        raise UsageError(f"--grace-period {args.grace_period} exceeds --max-epochs {args.max_epochs}")
    if args.cpus_per_trial <= 0:
        raise UsageError("--cpus-per-trial must be positive")
    if args.gpus_per_trial == "auto":
        pass
    elif args.gpus_per_trial < 0 or (args.gpus_per_trial > 1 and args.gpus_per_trial != int(args.gpus_per_trial)):
        raise UsageError("--gpus-per-trial must be a fraction of one GPU (0.25, 0.5) or a whole number of GPUs")
    for name in ("patience", "subset"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1 (got {getattr(args, name)})")
    if get_spec(args.model).framework is not None:  # a user's builder: once built (check_model)
        check_lr_find(args)
    if args.lr_find and args.resume:
        raise UsageError("--lr-find starts no search: use it without --resume")
    if args.warm_start and not args.resume and args.searcher != "optuna":
        raise UsageError("--warm-start seeds Optuna's TPE with the old trials: use it with --searcher optuna")
    for name in ("resolution", "image_size"):
        if getattr(args, name) is not None and getattr(args, name) < 16:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 16 (got {getattr(args, name)})")


def check_lr_find(args) -> None:
    from trainables.framework import framework_of

    if (args.lr_find or args.lr_range_from_finder) and not framework_of(args.model).supports_lr_find:
        raise UsageError(f"the LR range test needs a torch model; {args.model} is {framework_of(args.model).name}")


def check_model(args, num_classes: int, side: int, space: dict, config: dict) -> None:
    """A user's model (trainables/models/user.py): built with the first trial's `config` (searched keys without a
    default: a draw from the space), one dummy batch through it, before Ray starts; its framework then recorded."""
    from ray.tune.search.sample import Domain

    from trainables.models import get_spec
    from trainables.models.user import check

    if get_spec(args.model).kind == "builtin":
        return
    drawn = {k: v.sample() for k, v in space.items() if isinstance(v, Domain) and k not in config}
    check(args.model, num_classes, side, {**drawn, **config})
    check_lr_find(args)


def weights_path(args) -> dict:
    """Pretrained models: their weights are on this node (or --weights exists) before anything starts; --weights
    made absolute (trials run in other working directories)."""
    from trainables.models import weights_check
    from trainables.models.weights import WeightsError

    check = weights_check(args.model)
    if check is None:
        if args.weights:
            pretrained = f"{args.model}:pretrained" if args.model.startswith("timm:") else "resnet18_pretrained"
            raise UsageError(f"--weights is for pretrained models ({pretrained}); {args.model} has none")
        return {}
    try:
        path = check(args.weights)
    except WeightsError as e:
        raise UsageError(str(e)) from None
    return {"weights": str(path)} if args.weights else {}


def fix_resolution(args, space: dict, defaults: dict) -> None:
    """--resolution (or --smoke-test's small one) replaces the searched `resolution` by a constant."""
    resolution = args.resolution or (SMOKE_RESOLUTION if args.smoke_test and "resolution" in space else None)
    if resolution is None:
        return
    if "resolution" not in space:
        raise UsageError(f"--resolution is for models that search it (resnet18_pretrained), not {args.model}")
    space["resolution"] = resolution
    defaults.pop("resolution", None)  # a constant now: Optuna's first point must name searched keys only


def smoke_sizes(args, given: set[str]) -> dict:
    """--smoke-test: 2 trials of 2 epochs, no time budget, except where a flag is given (as the plan keeps them); an
    extension keeps its saved sizes and its own budget."""
    if args.smoke_test and not getattr(args, "extend", False):
        sizes = {"num_samples": 2, "max_epochs": 2, "grace_period": 1, "time_budget": None}
        return {k: v for k, v in sizes.items() if k not in given}
    return {}


def check_cuda_here(args) -> None:
    """A GPU request without --address (or --local-gpus) runs here: this machine needs a CUDA GPU."""
    auto = args.gpus_per_trial == "auto"
    if auto and not args.address:
        import torch

        if torch.cuda.device_count() == 0:
            raise UsageError(
                "--gpus-per-trial auto measures a training step on a GPU, but this machine has no CUDA GPU; "
                "give a number (0.25 packs 4 trials per GPU), or --address a cluster with GPU nodes"
            )
    elif not auto and args.gpus_per_trial > 0 and not args.address and not args.local_gpus:
        import torch

        if torch.cuda.device_count() == 0:
            raise UsageError(
                f"--gpus-per-trial {args.gpus_per_trial:g} asked, but this machine has no CUDA GPU; "
                "use --gpus-per-trial 0, or --address a cluster with GPU nodes"
            )


def restored(args, given: set[str]) -> dict:
    """--resume [NAME]: pick the experiment, decide whether it is continued or extended (`extend`), refuse changed
    search flags; the settings it changes: its saved arguments (search_driver.resume), its name, `resume` True and
    the effective --max-failures. An extension keeps its own budget flags."""
    from analysis.experiment import EXPERIMENT_FILE, join, read_json
    from search_driver import resume

    name = args.name
    if isinstance(args.resume, str):  # --resume NAME
        if args.name not in (None, args.resume):
            raise UsageError(f"--resume {args.resume} and --name {args.name} name two experiments; give one")
        name = args.resume
    if "warm_start" in given:
        raise UsageError(
            "--warm-start starts a new experiment from an old one's trials, --resume continues or extends an "
            "existing one: give one of them"
        )
    name, line = resume.choose_experiment(args.storage_path, name)
    info = read_json(join(args.storage_path, name, EXPERIMENT_FILE))
    from trainables.models.user import changed

    if why := changed(info, "--resume"):  # a user's builder file edited since: its trials would train another model
        raise resume.ResumeError(why)
    path = join(args.storage_path, name)
    extend = resume.extends(path, info, args, given)
    own = resume.BUDGET if extend else set()
    resume.check_flags(info["args"], args, given, changeable=own)
    if not extend:
        resume.check_something_to_do(path, info)
    saved = {key: value for key, value in info["args"].items() if key not in resume.CHANGEABLE | own | {"extend"}}
    print(line.replace("resuming", "extending", 1) if extend else line, flush=True)
    failures = resume.effective_max_failures(info, args, given)
    return {**saved, "name": name, "resume": True, "extend": extend, "max_failures": failures}
