"""Report on a search: best config -> retrain -> one test-set evaluation -> metric tables and plots.

    # the most recent experiment under experiments/: retrain its best config, evaluate once on the test set
    python report.py --experiment latest

    # 3 seeds (mean ± std of test accuracy), 15 epochs each
    python report.py --experiment lenet5-20261121-120000 --seeds 3 --epochs 15

    # no retraining: evaluate the best trial's own checkpoint
    python report.py --experiment /path/to/experiment --no-retrain

    # look at the data: 8 training images per class, saved to results/samples_<data>.png
    python report.py --samples-only --data-dir ../shared/data/cifar10

    # export (and check) the model of a report written before this existed; then predict with it
    python report.py --export-only results/lenet5-20261121-120000
    python predict.py --model results/lenet5-20261121-120000 my_images/

Writes results/<experiment>/: metrics.json/.md/.csv/.txt, best_config.json, model.pth (or model.keras), the plots
learning_curves, best_trial, confusion_matrix, hyperparameters, param_importance, samples (.png), and report.md;
then the model exported with its preprocessing inside and checked (serving/export.py): model.pt2 + model.onnx (torch)
or model_inference.keras + model_savedmodel/ + model.onnx (Keras), described by model_card.json.
Outputs appear only when complete: they are written to a temporary folder that replaces the old one at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent

# The original project's published test figures, shown beside ours (its precision/recall/specificity/F1 as given).
ORIGINAL = {
    "lenet5": {"accuracy": 0.534, "precision": 0.591, "recall": 0.513, "specificity": 0.559, "f1": 0.550},
    "resnet18": {"accuracy": 0.631, "precision": 0.590, "recall": 0.748, "specificity": 0.524, "f1": 0.660},
}
ORIGINAL_NOTE = {
    "lenet5": "LeNet5, 20 epochs",
    "resnet18": "ResNet18 with the 7x7 ImageNet stem, trained from scratch",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("which experiment")
    g.add_argument("--experiment", default="latest", help="latest, a NAME under --storage-path, or a PATH / URI")
    g.add_argument("--storage-path", default="experiments")
    g.add_argument("--out", default="results", help="reports go to OUT/<experiment name>/")
    g = p.add_argument_group("evaluation")
    g.add_argument("--epochs", type=int, default=None, help="retrain epochs (default: as many as the best trial ran)")
    g.add_argument("--seeds", type=int, default=1, help="retrain with K seeds; mean ± std of test accuracy")
    g.add_argument("--no-retrain", action="store_true", help="evaluate the best trial's last checkpoint instead")
    g.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    g.add_argument("--data-dir", default=None, help="the data, if not where the experiment found it")
    g.add_argument("--cache-dir", default=None)
    g = p.add_argument_group("export (serving/export.py)")
    g.add_argument("--export-only", metavar="RESULTS_DIR", default=None, help="only export a report folder's model")
    g.add_argument("--no-export", action="store_true", help="skip the export after the report")
    g = p.add_argument_group("data samples only")
    g.add_argument("--samples-only", action="store_true", help="only draw N training images per class of --data-dir")
    g.add_argument("--samples-per-class", type=int, default=8)
    g.add_argument("--show", action="store_true", help="show the samples grid in a window instead of saving it")
    return p.parse_args(argv)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------


def samples_only(args) -> int:
    from analysis import plots
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
    from trainables.data import load_dataset

    src = exp.info["data"]
    data_dir = args.data_dir or src["path"]
    return load_dataset(data_dir, seed=exp.info["split_seed"], image_size=src.get("image_size", 32),
                        cache_dir=args.cache_dir, subset=src.get("subset"))  # fmt: skip


def evaluate_runs(exp, args, dataset, fw) -> tuple[list, list[dict]]:
    """Retrain (one per seed) or load the checkpoint; returns the runs and each one's test metrics."""
    from tqdm import tqdm

    from analysis.metrics import classification_metrics
    from analysis.retrain import Run

    config = exp.best_config
    data = dataset.search_arrays()
    runs = []
    if args.no_retrain:
        trial = next(t for t in exp.analysis.trials if t.trial_id == exp.best_id)
        ckpt = exp.analysis.get_last_checkpoint(trial)
        if ckpt is None:
            raise ReportError(f"trial {exp.best_id} of {exp.path} kept no checkpoint; run without --no-retrain")
        with ckpt.as_directory() as d:
            model, epoch = fw.from_checkpoint(d, config, dataset.num_classes)
        history = exp.curves[exp.best_id].to_dict("records")
        runs.append(Run(model, history, epoch))
    else:
        epochs = args.epochs or int(exp.curves[exp.best_id]["training_iteration"].max())
        for k in range(args.seeds):
            seed = int(config.get("seed", 0)) + k
            with tqdm(total=epochs, desc=f"retrain seed {seed}", unit="epoch", file=sys.stderr) as bar:

                def on_epoch(r, bar=bar):
                    bar.update(1)
                    bar.set_postfix(val_loss=f"{r['val_loss']:.3f}", val_acc=f"{r['val_acc']:.3f}")

                runs.append(fw.fit({**config, "seed": seed}, data, epochs, on_epoch))
    results = []
    for run in tqdm(runs, desc="test set", unit="model", file=sys.stderr):
        scores = fw.scores(run.model, dataset.x_test, data, config)
        results.append(classification_metrics(dataset.y_test, scores, dataset.classes) | {"_pred": scores.argmax(1)})
    return runs, results


def write_report(exp, args, dataset, fw, runs, results, out: Path) -> None:
    from analysis import importance, plots
    from analysis.metrics import metrics_csv, metrics_markdown, metrics_text

    config = exp.best_config
    data = dataset.search_arrays()
    main, pred = results[0], results[0].pop("_pred")
    for r in results[1:]:
        r.pop("_pred")
    accs = [r["accuracy"] for r in results]
    seed0 = int(config.get("seed", 0))
    main["seeds"] = [
        {"seed": seed0 + k, "accuracy": r["accuracy"], "top5_accuracy": r["top5_accuracy"],
         "macro_f1": r["macro"]["f1"], "kept_epoch": run.best_epoch}
        for k, (r, run) in enumerate(zip(results, runs, strict=True))
    ]  # fmt: skip
    main["mean"], main["std"] = float(np.mean(accs)), float(np.std(accs, ddof=1) if len(accs) > 1 else 0.0)
    main["retrained"] = not args.no_retrain
    (out / "metrics.json").write_text(json.dumps(main, indent=2))
    (out / "metrics.md").write_text(metrics_markdown(main))
    (out / "metrics.csv").write_text(metrics_csv(main))
    (out / "metrics.txt").write_text(metrics_text(main))
    best_config = {**config, "input": fw.input_spec(runs[0].model, data), "classes": dataset.classes}
    (out / "best_config.json").write_text(json.dumps(best_config, indent=2, default=str))
    weights = fw.save(runs[0].model, out)

    args_ = exp.info["args"]
    rungs = plots.asha_rungs(args_["grace_period"], args_["reduction_factor"], args_["max_epochs"])
    plots.learning_curves(exp.curves, exp.best_id, exp.metric, rungs, out / "learning_curves.png")
    plots.training_history(runs[0].history, runs[0].best_epoch, out / "best_trial.png")
    plots.confusion(np.array(main["confusion_matrix"]), dataset.classes, out / "confusion_matrix.png")
    finals = exp.final_results()
    space = exp.info["search_space"]
    plots.hyperparameters(finals, space, exp.metric, exp.best_id, out / "hyperparameters.png")
    rung = rungs[0] if rungs else args_["max_epochs"]
    imp, note = importance.importances(rung_results(exp, rung), space, exp.metric, exp.mode, f"at epoch {rung}")
    plots.param_importance(imp, note, out / "param_importance.png")
    plots.prediction_samples(dataset.x_test, dataset.y_test, pred, dataset.classes, out / "samples.png")
    (out / "report.md").write_text(report_markdown(exp, args, main, weights, fw, config, dataset, imp, note))


def rung_results(exp, epoch: int):
    """Each trial's metric at the first ASHA rung (every trial reached it): comparable across trials, unlike
    their final values, which ASHA took at different epochs."""
    import pandas as pd

    rows = []
    for tid, df in exp.curves.items():
        row = df[df["training_iteration"] <= epoch].iloc[-1].to_dict()
        rows.append({"trial_id": tid, **row, **{f"config/{k}": v for k, v in exp.configs[tid].items()}})
    return pd.DataFrame(rows)


def report_markdown(exp, args, m, weights, fw, config, dataset, imp, imp_note) -> str:
    s = exp.summary()
    info = exp.info
    model = info["model"]
    lines = [
        f"# Report: {Path(exp.path).name}",
        "",
        "## Experiment",
        f"- model **{model}**, data `{info['data']['path']}` ({info['data']['kind']}, {len(dataset.classes)} classes; "
        f"{info['data']['num_train']} train / {info['data']['num_val']} val / {len(dataset.y_test)} test images, "
        f"split seed {info['split_seed']})",
        f"- search: Optuna TPE + ASHA on `{exp.metric}` ({exp.mode}), {s['trials']} trials: {s['completed_all_epochs']}"
        f" ran all {s['max_epochs']} epochs, {s['stopped_early']} stopped early by ASHA, {s['diverged']} diverged; "
        f"{s['epochs_spent']} trial-epochs in {s['wall_time_s'] / 60:.1f} min of search wall time",
        f"- best trial `{exp.best_id}`: {exp.metric} {exp.curves[exp.best_id][exp.metric].iloc[-1]:.4f} after "
        f"{int(exp.curves[exp.best_id]['training_iteration'].max())} epochs",
        f"- code {info.get('git_sha') or 'unknown'}; packages {', '.join(f'{k} {v}' for k, v in info['packages'].items())}",
        "",
        "## Best config",
        "```json",
        json.dumps({k: v for k, v in config.items()}, indent=2, default=str),
        "```",
        "",
        "## Test set (evaluated once)",
        ("Retrained on the training split " + (f"with {len(m['seeds'])} seeds " if len(m["seeds"]) > 1 else "")
         + "keeping the weights of the epoch with the lowest validation loss (epoch "
         + ", ".join(str(r["kept_epoch"]) for r in m["seeds"]) + ")."
         if m["retrained"] else f"The best trial's own last checkpoint (epoch {m['seeds'][0]['kept_epoch']}), not retrained."),
        "",
        metrics_table_intro(m),
        "",
        *metrics_md_lines(m),
        "",
    ]  # fmt: skip
    if model in ORIGINAL:
        o = ORIGINAL[model]
        same = model != "resnet18" or config.get("stem") == "imagenet"
        lines += [
            "## Beside the original write-up",
            f"Original: {ORIGINAL_NOTE[model]}" + ("" if same else " (this run's stem differs: compare with care)")
            + "; ours: macro averages over classes.",
            "",
            "| | accuracy | precision | recall | specificity | F1 |",
            "|---|---|---|---|---|---|",
            f"| original | {o['accuracy']:.3f} | {o['precision']:.3f} | {o['recall']:.3f} | {o['specificity']:.3f} | {o['f1']:.3f} |",
            f"| this report | {m['accuracy']:.3f} | {m['macro']['precision']:.3f} | {m['macro']['recall']:.3f} | "
            f"{m['macro']['specificity']:.3f} | {m['macro']['f1']:.3f} |",
            "",
        ]  # fmt: skip
    lines += [
        "## Plots",
        "![learning curves](learning_curves.png)",
        "![retrain](best_trial.png)",
        "![confusion matrix](confusion_matrix.png)",
        "![hyperparameters](hyperparameters.png)",
        f"![importance](param_importance.png) — {imp_note}: the first ASHA rung, which every trial reached, so all are "
        "compared after the same training.",
        "![samples](samples.png)",
        "",
        "## The trained model",
        f"`{weights}`; config, normalisation and input size in `best_config.json`. To load it for inference:",
        fw.load_note(config, len(dataset.classes)),
        "",
    ]
    return "\n".join(lines)


def metrics_table_intro(m) -> str:
    return (f"accuracy **{m['accuracy']:.4f}**, top-5 {m['top5_accuracy']:.4f}"
            + (f"; over seeds {m['mean']:.4f} ± {m['std']:.4f}" if len(m["seeds"]) > 1 else ""))  # fmt: skip


def metrics_md_lines(m) -> list[str]:
    from analysis.metrics import metrics_markdown

    return metrics_markdown(m).splitlines()[2:]  # the table without its headline (said just above)


# ---------------------------------------------------------------------------------------------------------------


class ReportError(Exception):
    pass


def main(argv=None) -> int:
    args = parse_args(argv)
    from analysis.trials import ReportError as TrialsError
    from analysis.trials import load_experiment, resolve_experiment
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
        if args.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ReportError("--device cuda asked, but torch sees no CUDA GPU; use --device cpu")
        from analysis.retrain import get_framework

        t0 = time.time()
        path = resolve_experiment(args.experiment, args.storage_path)
        exp = load_experiment(path)
        print(f"experiment {path}: best trial {exp.best_id} by {exp.metric} ({exp.mode})", file=sys.stderr)
        dataset = load_data(exp, args)
        fw = get_framework(exp.info.get("framework", "torch"), args.device)
        runs, results = evaluate_runs(exp, args, dataset, fw)

        out = Path(args.out) / Path(exp.path.rstrip("/")).name
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        write_report(exp, args, dataset, fw, runs, results, tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        tmp = None
        if not args.no_export:  # after the report is in place: a failed export check loses no result
            export_model(out, framework=fw.name, model=runs[0].model, dataset=dataset, config=exp.best_config,
                         info=exp.info, metrics=json.loads((out / "metrics.json").read_text()))  # fmt: skip
        m = json.loads((out / "metrics.json").read_text())
        print(f"test accuracy {m['accuracy']:.4f} (macro F1 {m['macro']['f1']:.4f})"
              + (f", {m['mean']:.4f} ± {m['std']:.4f} over {len(m['seeds'])} seeds" if len(m["seeds"]) > 1 else "")
              + f"; report: {out / 'report.md'} ({time.time() - t0:.0f} s)")  # fmt: skip
        return 0
    except (ReportError, TrialsError, DataError) as e:
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
