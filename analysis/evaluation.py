"""The test-set evaluation of a report: retrain the best config once per seed (or load the best trial's checkpoint),
score each model once on the test set, and choose the model to save without looking at the test set."""

from __future__ import annotations

import numpy as np

from trainables import metric_names as M

from .classification_metrics import classification_metrics
from .progress import bar, step
from .retrain import Run, retrain
from .trials import ReportError


def evaluate_runs(exp, args, dataset, fw) -> tuple[list, list[dict]]:
    """Retrain (one per seed) or load the checkpoint; returns the runs and each one's test metrics, each with its
    predictions under "_pred" (taken out by saved_model_metrics)."""
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

                runs.append(retrain(fw, {**config, "seed": seed}, data, epochs, on_epoch))
    results = []
    step(f"evaluating on the test set ({len(dataset.y_test)} images, {len(runs)} model{'s' * (len(runs) > 1)})")
    for run in runs:
        scores = fw.predict(run.model, dataset.x_test, data, config)
        results.append(classification_metrics(dataset.y_test, scores, dataset.classes) | {"_pred": scores.argmax(1)})
    return runs, results


def saved_model_metrics(runs: list, results: list[dict], config: dict, retrained: bool) -> tuple[dict, int, np.ndarray]:
    """metrics.json: the saved model's test metrics, with every seed's figures and the mean ± std over seeds; returns
    it, the index of the saved run and that run's test predictions."""
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
    main = results[chosen]
    main["seeds"], main["saved_seed"] = seeds, seeds[chosen]["seed"]
    main["saved_seed_rule"] = "lowest validation loss at its kept epoch" if len(runs) > 1 else "the only run"
    main["mean"], main["std"] = float(np.mean(accs)), float(np.std(accs, ddof=1) if len(accs) > 1 else 0.0)
    main["retrained"] = retrained
    return main, chosen, preds[chosen]


def kept_val_loss(run) -> float:
    """Validation loss of the epoch whose weights the run kept (inf if it never reported a finite one)."""
    losses = [h[M.VAL_LOSS] for h in run.history if h.get(M.EPOCH) == run.best_epoch and M.VAL_LOSS in h]
    return float(losses[-1]) if losses else float("inf")
