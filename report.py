"""Report on a search: best config -> retrain -> one test-set evaluation -> metric tables and plots.

    # the most recent experiment under experiments/: retrain its best config, refit it on train + validation, evaluate
    # each once on the test set (with flip test-time augmentation), ship the refit (the defaults: docs/report.md)
    python report.py --experiment latest

    # what each option buys, over 3 seeds: the plain retrain, + refit, + EMA of the weights, + flip TTA, all of them
    python report.py --experiment latest --seeds 3 --refit --ema --flip-tta

    # ship the plain retrain (one training per seed, no TTA)
    python report.py --experiment latest --no-refit --no-flip-tta

    # 3 seeds (mean ± std of test accuracy, a table per seed), 15 epochs each
    python report.py --experiment lenet5-20261121-120000 --seeds 3 --epochs 15

    # 2 torch threads instead of the default (the cores other runnable processes leave free)
    python report.py --experiment latest --threads 2

    # no retraining: evaluate the best trial's own checkpoint
    python report.py --experiment /path/to/experiment --no-retrain

    # look at the data: 8 training images per class, saved to results/samples_<data>.png
    python report.py --samples-only --data-dir ../shared/data/cifar10

    # export (and check) the model of a report written before this existed; then predict with it
    python report.py --export-only results/lenet5-20261121-120000
    python predict.py --model results/lenet5-20261121-120000 my_images/

Writes results/<experiment>/: metrics.json/.md/.csv/.txt, best_config.json, model.pth (or model.keras), the plots
learning_curves, best_trial, confusion_matrix, hyperparameters, param_importance, samples (.png), report.md, and
report.html (the same content in one self-contained file: images embedded, no network); then the model exported with
its preprocessing inside and checked (serving/export.py): model.pt2 + model.onnx (torch) or model_inference.keras +
model_savedmodel/ + model.onnx (Keras), described by model_card.json.
The shipped model (the last row of report.md's table) is what model.pth holds and what is exported; the model card and
predict.py say which options it carries. Outputs appear only when complete: they are written to a temporary folder that replaces the old one at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from analysis.settings import Settings


def parse_args(argv=None) -> Settings:
    """report.py's flags, read-only from here on (analysis/settings.py)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("which experiment")
    g.add_argument("--experiment", default="latest", help="latest, a NAME under --storage-path, or a PATH / URI")
    g.add_argument("--storage-path", default="experiments", help="where NAME and latest are looked up")
    g.add_argument("--out", default="results", help="reports go to OUT/<experiment name>/")
    g = p.add_argument_group("evaluation")
    g.add_argument("--epochs", type=int, default=None, help="retrain epochs (default: as many as the best trial ran)")
    g.add_argument("--seeds", type=int, default=1, help="retrain with K seeds; mean ± std of test accuracy")
    g.add_argument("--no-retrain", action="store_true", help="evaluate the best trial's last checkpoint instead")
    g.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="M",
        help="minutes the report may spend training (default: half the search's --time-budget; none without one): "
        "over it, the best trial's checkpoint stands for the retrain and a refit that does not fit is skipped",
    )
    g.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    g.add_argument(
        "--precision",
        choices=["trial", "auto", "fp32", "bf16", "fp16"],
        default="trial",
        help="autocast dtype of the retrain and the test evaluation: the best trial's recorded one (default), this "
        "machine's own choice (auto), or a given one",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of the retrain (default: the cores other runnable processes leave free now, at least 1; "
        "2 threads on 2 busy cores ran 4.5-23x slower than 1)",
    )
    g.add_argument("--data-dir", default=None, help="the data, if not where the experiment found it")
    g.add_argument(
        "--cache-dir", default=None, help="decoded-array cache (default: $CIFAR_TUNE_CACHE or ~/.cache/cifar-tune)"
    )
    g.add_argument(
        "--test-subset",
        type=int,
        default=None,
        metavar="N",
        help="evaluate on N test images, stratified (default: the whole test set)",
    )
    from analysis.final_model import DEFAULTS, EMA_DECAY  # numpy only: --help stays fast

    on = {k: "on" if v else "off" for k, v in DEFAULTS.items()}
    g = p.add_argument_group("the shipped model (analysis/final_model.py; report.md's table shows what each bought)")
    g.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also retrain on train + validation for the search's best epoch and ship that (default: "
        f"{on['refit']}; "
        "one more training per seed)",
    )
    g.add_argument(
        "--ema",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"keep an EMA of the weights (BatchNorm recomputed) and ship it (default: {on['ema']})",
    )
    g.add_argument(
        "--ema-decay", type=float, default=None, metavar="D", help=f"per-step EMA decay (default: {EMA_DECAY:g})"
    )
    g.add_argument(
        "--flip-tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mean of each image and its mirror, when the config trained with flips; inside the exported "
        f"files too (default: {on['flip_tta']})",
    )
    g.add_argument(
        "--ensemble",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ship the mean of the plain model's and the refit's probabilities: no more training, twice the "
        f"prediction time (default: {on['ensemble']}; needs the refit)",
    )
    g = p.add_argument_group("export (serving/export.py)")
    g.add_argument("--export-only", metavar="RESULTS_DIR", default=None, help="only export a report folder's model")
    g.add_argument("--no-export", action="store_true", help="skip the export after the report")
    g = p.add_argument_group("data samples only")
    g.add_argument("--samples-only", action="store_true", help="only draw N training images per class of --data-dir")
    g.add_argument("--samples-per-class", type=int, default=8, help="images per class in the grid (default: 8)")
    g.add_argument("--show", action="store_true", help="show the samples grid in a window instead of saving it")
    return Settings.of(p.parse_args(argv))


def main(argv=None) -> int:
    args = parse_args(argv)
    # Imports after parsing, here and below: --help and a bad argument answer without loading torch, Ray or Optuna.
    from analysis.report_files import add_export_section
    from analysis.shell import error_lines
    from analysis.trials import ReportError
    from image_data.cache import DataError
    from serving.export import ExportError, export_existing
    from trainables.models import UnknownModelError

    try:
        if args.samples_only:
            from analysis.report_data import samples_only

            return samples_only(args)
        if args.export_only:
            experiment = None if args.experiment == "latest" else args.experiment
            card = export_existing(
                args.export_only,
                storage_path=args.storage_path,
                experiment=experiment,
                data_dir=args.data_dir,
                cache_dir=args.cache_dir,
            )
            add_export_section(Path(args.export_only), card)
            return 0
        check_args(args)
        make_report(args)
        return 0
    except (ReportError, DataError, UnknownModelError) as e:  # UnknownModelError: a user's model that cannot load
        print(error_lines(str(e)), file=sys.stderr)
        return 2
    except ExportError as e:
        print(error_lines(f"export: {e}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; no report written", file=sys.stderr)
        return 130


def check_args(args) -> None:
    """Bad arguments fail here, in one line, before minutes of loading and retraining."""
    from analysis.trials import ReportError

    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        raise ReportError("--seeds and --epochs must be at least 1")
    if args.test_subset is not None and args.test_subset < 1:
        raise ReportError("--test-subset must be at least 1")
    if args.time_budget is not None and args.time_budget <= 0:
        raise ReportError(f"--time-budget must be a positive number of minutes (got {args.time_budget:g})")
    if args.threads is not None and args.threads < 1:
        raise ReportError(f"--threads must be at least 1 (got {args.threads})")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ReportError("--device cuda asked, but torch sees no CUDA GPU; use --device cpu")


def make_report(args) -> None:
    from analysis.evaluation import evaluate_runs
    from analysis.experiment import EXPERIMENT_FILE, join, read_json
    from analysis.final_model import options_from_args
    from analysis.progress import restart_clock, step
    from analysis.report_budget import plan_training
    from analysis.report_data import load_data
    from analysis.report_files import add_export_section, replacing, write_report
    from analysis.retrain import busy_cores, default_threads, local_framework
    from analysis.trials import ReportError, load_experiment, resolve_experiment
    from search_driver.ray_compat import quiet_analysis_logs
    from serving.export import export_model
    from trainables.models.user import changed

    t0 = time.time()
    restart_clock()
    quiet_analysis_logs()  # Ray's "no result for trial X" warnings for pending trials
    options = options_from_args(args)
    path = resolve_experiment(args.experiment, args.storage_path)
    step(f"reading the experiment {path}")
    if why := changed(read_json(join(path, EXPERIMENT_FILE)), "report.py"):  # a user's builder file edited since
        raise ReportError(why)
    exp = load_experiment(path)
    print(f"experiment {path}: best trial {exp.best_id} by {exp.metric} ({exp.mode})", file=sys.stderr)
    step(f"loading the data ({exp.info['data']['path']})")
    dataset = load_data(exp, args)

    busy = busy_cores()
    threads = args.threads or default_threads(busy)
    print(
        f"retrain: {threads} CPU thread(s) of {os.cpu_count()} cores ({busy:.1f} busy now, 1-min load "
        f"{os.getloadavg()[0]:.1f}; --threads N to change)",
        file=sys.stderr,
    )
    images = (len(dataset.y_train), len(dataset.y_train) + len(dataset.y_val))
    training = plan_training(exp, args, options, threads, images)
    for line in training.lines:
        print(line, file=sys.stderr)
    # a refit the budget skips takes the ensemble that needs it along
    options = dataclasses.replace(options, refit=training.refit, ensemble=options.ensemble and training.refit)
    step(
        f"{'loading the best checkpoint' if training.from_checkpoint else 'retraining the best config'} "
        f"({exp.info.get('framework', 'torch')})"
    )
    fw = local_framework(exp.info.get("framework", "torch"), args.device, threads)
    ev = evaluate_runs(exp, args, dataset, fw, options, training)
    print(f"precision: {ev.precision['used']}, {ev.precision['chosen_by']}", file=sys.stderr)

    out = Path(args.out) / Path(exp.path.rstrip("/")).name
    with replacing(out) as tmp:
        step("writing metrics, the model and the report")
        saved = write_report(exp, args, dataset, fw, ev, tmp)
    m = json.loads((out / "metrics.json").read_text())
    if not args.no_export:  # after the report is in place: a failed export check loses no result
        step("exporting and checking the shipped model")
        card = export_model(
            out,
            framework=fw.name,
            model=ev.shipped_model(saved),
            dataset=dataset,
            config=exp.best_config,
            info=exp.info,
            metrics=m,
            final_model=m["final_model"],
        )
        add_export_section(out, card)
    print(f"{headline(m)}; report: {out / 'report.md'} ({time.time() - t0:.0f} s)")


def headline(m: dict) -> str:
    from analysis.final_model import options_words

    carries = options_words(m["final_model"])
    if len(m["seeds"]) > 1:
        return (
            f"test accuracy {m['mean']:.4f} ± {m['std']:.4f} over {len(m['seeds'])} seeds (saved model: seed "
            f"{m['saved_seed']}, {m['accuracy']:.4f}, macro F1 {m['macro']['f1']:.4f}; {carries})"
        )
    return f"test accuracy {m['accuracy']:.4f} (macro F1 {m['macro']['f1']:.4f}; {carries})"


if __name__ == "__main__":
    sys.exit(main())
