"""Report on a search: best config -> retrain -> one test-set evaluation -> metric tables and plots.

    # the most recent experiment under experiments/: retrain its best config, evaluate once on the test set
    python report.py --experiment latest

    # 3 seeds (mean ± std of test accuracy, a table per seed), 15 epochs each
    python report.py --experiment lenet5-20261121-120000 --seeds 3 --epochs 15

    # 2 torch threads instead of the default (the cores the load average leaves free)
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
Outputs appear only when complete: they are written to a temporary folder that replaces the old one at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
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
    g.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of the retrain (default: the cores the 1-minute load average leaves free, at least 1; "
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
    g = p.add_argument_group("export (serving/export.py)")
    g.add_argument("--export-only", metavar="RESULTS_DIR", default=None, help="only export a report folder's model")
    g.add_argument("--no-export", action="store_true", help="skip the export after the report")
    g = p.add_argument_group("data samples only")
    g.add_argument("--samples-only", action="store_true", help="only draw N training images per class of --data-dir")
    g.add_argument("--samples-per-class", type=int, default=8, help="images per class in the grid (default: 8)")
    g.add_argument("--show", action="store_true", help="show the samples grid in a window instead of saving it")
    return p.parse_args(argv)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------


def samples_only(args) -> int:
    from analysis import plots
    from analysis.trials import ReportError
    from trainables.data import load_dataset

    if not args.data_dir:
        raise ReportError("--samples-only needs --data-dir DIR")
    ds = load_dataset(args.data_dir, cache_dir=args.cache_dir)
    if args.show:
        plots.class_grid(ds.x_train, ds.y_train, ds.classes, None, args.samples_per_class)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = plots.class_grid(ds.x_train, ds.y_train, ds.classes, out / f"samples_{Path(args.data_dir).resolve().name}.png",
                            args.samples_per_class)  # fmt: skip
    print(f"wrote {path}")
    return 0


def load_data(exp, args):
    from trainables.data import load_dataset, skip_summary

    src = exp.info["data"]
    data_dir = args.data_dir or src["path"]
    # the experiment's own image size and training subset; the test set whole unless --test-subset
    ds = load_dataset(data_dir, seed=exp.info["split_seed"], image_size=src.get("image_size", 32),
                      cache_dir=args.cache_dir, subset=src.get("subset"), test_subset=args.test_subset)  # fmt: skip
    if ds.skipped:
        print(skip_summary(ds.skipped, ds.num_files, f"full list in {exp.path}/experiment.json"), file=sys.stderr)
    return ds


def evaluate_runs(exp, args, dataset, fw) -> tuple[list, list[dict]]:
    """Retrain (one per seed) or load the checkpoint; returns the runs and each one's test metrics."""
    from analysis.metrics import classification_metrics
    from analysis.progress import bar, step
    from analysis.retrain import Run
    from analysis.trials import ReportError
    from trainables import metrics as M

    config = exp.best_config
    data = dataset.search_arrays()
    runs = []
    if args.no_retrain:
        trial = next(t for t in exp.analysis.trials if t.trial_id == exp.best_id)
        ckpt = exp.analysis.get_last_checkpoint(trial)
        if ckpt is None:
            raise ReportError(f"trial {exp.best_id} of {exp.path} kept no checkpoint; run without --no-retrain")
        with ckpt.as_directory() as d:
            model, epoch = fw.from_checkpoint(
                d, {**config, "input_size": dataset.x_train.shape[-1]}, dataset.num_classes
            )
        history = exp.curves[exp.best_id].to_dict("records")
        runs.append(Run(model, history, epoch))
    else:
        # Without --epochs: the trial exactly (its schedule horizon config["max_epochs"], its epochs). --epochs N is a
        # new recipe: N epochs with the schedule annealing over N.
        epochs = args.epochs or int(exp.curves[exp.best_id]["training_iteration"].max())
        if args.epochs:
            config = {**config, "max_epochs": args.epochs}
        for k in range(args.seeds):
            seed = int(config.get("seed", 0)) + k
            with bar(epochs, f"retrain seed {seed}", "epoch") as progress:

                def on_epoch(r, progress=progress):
                    progress.set_postfix(val_loss=f"{r[M.VAL_LOSS]:.3f}", val_acc=f"{r[M.VAL_ACC]:.3f}",
                                         images_per_s=f"{r[M.IMAGES_PER_S]:.0f}")  # fmt: skip
                    progress.update(1)

                runs.append(fw.fit({**config, "seed": seed}, data, epochs, on_epoch))
    results = []
    step(f"evaluating on the test set ({len(dataset.y_test)} images, {len(runs)} model{'s' * (len(runs) > 1)})")
    for run in runs:
        scores = fw.scores(run.model, dataset.x_test, data, config)
        results.append(classification_metrics(dataset.y_test, scores, dataset.classes) | {"_pred": scores.argmax(1)})
    return runs, results


def write_report(exp, args, dataset, fw, runs, results, out: Path) -> None:
    from analysis import importance, plots
    from analysis.metrics import metrics_csv, metrics_markdown, metrics_text
    from analysis.progress import step
    from analysis.report_html import report_html
    from analysis.report_markdown import report_markdown
    from analysis.trials import asha_rungs

    config = exp.best_config
    data = dataset.search_arrays()
    preds = [r.pop("_pred") for r in results]
    accs = [r["accuracy"] for r in results]
    seed0 = int(config.get("seed", 0))
    seeds = [
        {"seed": seed0 + k, "accuracy": r["accuracy"], "top5_accuracy": r["top5_accuracy"],
         "macro_f1": r["macro"]["f1"], "kept_epoch": run.best_epoch, "val_loss": kept_val_loss(run)}
        for k, (r, run) in enumerate(zip(results, runs, strict=True))
    ]  # fmt: skip
    # The saved model (and the per-class tables, confusion matrix and samples) is the seed with the lowest
    # validation loss: chosen on validation data, never on the test set. The headline is the mean over all seeds.
    chosen = min(range(len(runs)), key=lambda k: seeds[k]["val_loss"])
    main, pred, run = results[chosen], preds[chosen], runs[chosen]
    main["seeds"], main["saved_seed"] = seeds, seeds[chosen]["seed"]
    main["saved_seed_rule"] = "lowest validation loss at its kept epoch" if len(runs) > 1 else "the only run"
    main["mean"], main["std"] = float(np.mean(accs)), float(np.std(accs, ddof=1) if len(accs) > 1 else 0.0)
    main["retrained"] = not args.no_retrain
    (out / "metrics.json").write_text(json.dumps(main, indent=2))
    (out / "metrics.md").write_text(metrics_markdown(main))
    (out / "metrics.csv").write_text(metrics_csv(main))
    (out / "metrics.txt").write_text(metrics_text(main))
    best_config = {**config, "seed": main["saved_seed"], "input": fw.input_spec(run.model, data),
                   "classes": dataset.classes}  # fmt: skip
    (out / "best_config.json").write_text(json.dumps(best_config, indent=2, default=str))
    weights = fw.save(run.model, out)

    step("drawing the plots")
    args_ = exp.info["args"]
    rungs = asha_rungs(args_["grace_period"], args_["reduction_factor"], args_["max_epochs"])
    if args_.get("scheduler", "asha") != "asha":
        rungs = []
    plots.learning_curves(exp.curves, exp.best_id, exp.metric, rungs, out / "learning_curves.png")
    plots.training_history(run.history, run.best_epoch, out / "best_trial.png")
    plots.confusion(np.array(main["confusion_matrix"]), dataset.classes, out / "confusion_matrix.png")
    # Importance and the hyperparameter plot compare trials at one epoch that enough of them reached, never final
    # values taken at different epochs.
    rung = exp.comparison_epoch()
    at_rung = exp.results_at(rung)
    space = exp.info["search_space"]
    plots.hyperparameters(at_rung, space, exp.metric, exp.best_id, rung, out / "hyperparameters.png")
    when = f"best by epoch {rung}"
    imp, note = importance.importances(at_rung, space, exp.metric, exp.mode, when)
    step(f"hyperparameter importance (Optuna fANOVA, at epoch {rung})")
    plots.param_importance(imp, note, out / "param_importance.png")
    plots.prediction_samples(dataset.x_test, dataset.y_test, pred, dataset.classes, out / "samples.png")
    (out / "report.md").write_text(report_markdown(exp, main, weights, fw, config, dataset, note, rung, len(at_rung)))
    (out / "report.html").write_text(report_html((out / "report.md").read_text(), out))  # same content, one file


def kept_val_loss(run) -> float:
    """Validation loss of the epoch whose weights the run kept (inf if it never reported a finite one)."""
    from trainables import metrics as M

    losses = [h[M.VAL_LOSS] for h in run.history if h.get(M.EPOCH) == run.best_epoch and M.VAL_LOSS in h]
    return float(losses[-1]) if losses else float("inf")


# ---------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    from analysis.trials import ReportError, load_experiment, resolve_experiment
    from serving.export import ExportError, export_existing, export_model
    from trainables.data import DataError

    tmp = None
    try:
        if args.samples_only:
            return samples_only(args)
        if args.export_only:
            experiment = None if args.experiment == "latest" else args.experiment
            export_existing(args.export_only, storage_path=args.storage_path, experiment=experiment,
                            data_dir=args.data_dir, cache_dir=args.cache_dir)  # fmt: skip
            return 0
        if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
            raise ReportError("--seeds and --epochs must be at least 1")
        if args.test_subset is not None and args.test_subset < 1:
            raise ReportError("--test-subset must be at least 1")
        if args.threads is not None and args.threads < 1:
            raise ReportError(f"--threads must be at least 1 (got {args.threads})")
        if args.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ReportError("--device cuda asked, but torch sees no CUDA GPU; use --device cpu")
        from analysis.progress import restart_clock, step
        from analysis.retrain import get_framework

        t0 = time.time()
        restart_clock()
        path = resolve_experiment(args.experiment, args.storage_path)
        step(f"reading the experiment {path}")
        exp = load_experiment(path)
        print(f"experiment {path}: best trial {exp.best_id} by {exp.metric} ({exp.mode})", file=sys.stderr)
        step(f"loading the data ({exp.info['data']['path']})")
        dataset = load_data(exp, args)
        from analysis.retrain import default_threads

        threads = args.threads or default_threads()
        print(f"retrain: {threads} CPU thread(s) of {os.cpu_count()} cores (1-min load {os.getloadavg()[0]:.1f}; "
              "--threads N to change)", file=sys.stderr)  # fmt: skip
        step(f"{'loading the best checkpoint' if args.no_retrain else 'retraining the best config'} "
             f"({exp.info.get('framework', 'torch')})")  # fmt: skip
        fw = get_framework(exp.info.get("framework", "torch"), args.device, threads)
        runs, results = evaluate_runs(exp, args, dataset, fw)

        out = Path(args.out) / Path(exp.path.rstrip("/")).name
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        step("writing metrics, the model and the report")
        write_report(exp, args, dataset, fw, runs, results, tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        tmp = None
        m = json.loads((out / "metrics.json").read_text())
        if not args.no_export:  # after the report is in place: a failed export check loses no result
            saved = [s["seed"] for s in m["seeds"]].index(m["saved_seed"])  # the model write_report saved
            export_model(out, framework=fw.name, model=runs[saved].model, dataset=dataset, config=exp.best_config,
                         info=exp.info, metrics=m)  # fmt: skip
        if len(m["seeds"]) > 1:
            head = (f"test accuracy {m['mean']:.4f} ± {m['std']:.4f} over {len(m['seeds'])} seeds (saved model: seed "
                    f"{m['saved_seed']}, {m['accuracy']:.4f}, macro F1 {m['macro']['f1']:.4f})")  # fmt: skip
        else:
            head = f"test accuracy {m['accuracy']:.4f} (macro F1 {m['macro']['f1']:.4f})"
        print(f"{head}; report: {out / 'report.md'} ({time.time() - t0:.0f} s)")
        return 0
    except (ReportError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ExportError as e:
        print(f"error: export: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; no report written", file=sys.stderr)
        return 130
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
