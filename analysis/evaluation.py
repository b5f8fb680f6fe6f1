"""The test-set evaluation of a report: retrain the best config once per seed (or load the best trial's checkpoint),
score each model once on the test set, and choose the model to save without looking at the test set.

The search's rule travels with it: `exp.metric` / `exp.mode` (experiment.json) pick each retrain's kept epoch and the
saved seed, and the retrain trains and evaluates in the best trial's recorded precision unless --precision says
otherwise."""

from __future__ import annotations

import numpy as np

from trainables import metric_names as M

from .classification_metrics import classification_metrics
from .progress import bar, step
from .retrain import Run, retrain
from .trials import ReportError

PRECISION_CHOICES = ("trial", "auto", "fp32", "bf16", "fp16")


def trial_precision(exp) -> str | None:
    """The autocast dtype the best trial trained in (its reports' `precision`), or None if it did not record one."""
    df = exp.curves[exp.best_id]
    if M.PRECISION not in df:
        return None
    values = df[M.PRECISION].dropna()
    return str(values.iloc[-1]) if len(values) else None


def report_precision(exp, requested: str) -> tuple[str | None, str]:
    """(precision to force, or None for the device's own choice; how it was chosen, for report.md)."""
    if requested == "auto":
        return None, "this machine's own choice (--precision auto)"
    if requested != "trial":
        return requested, f"--precision {requested}"
    recorded = trial_precision(exp)
    if recorded is None:
        return None, "this machine's own choice (the best trial recorded none)"
    return recorded, f"the best trial's ({exp.best_id})"


def evaluate_runs(exp, args, dataset, fw) -> tuple[list[Run], list[dict], list[np.ndarray], dict]:
    """Retrain (one per seed) or load the checkpoint; returns the runs, each one's test metrics, each one's test
    predictions (class indices), and the precision record {"used", "chosen_by"}."""
    config = exp.best_config
    data = dataset.search_arrays()
    precision, chosen_by = report_precision(exp, getattr(args, "precision", "trial"))
    if precision is not None:
        config = {**config, M.PRECISION: precision}
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
        at = [h[exp.metric] for h in history if h.get(M.EPOCH) == epoch]
        runs.append(Run(model, history, epoch, float(at[-1]) if at else float("nan")))
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

                runs.append(
                    retrain(fw, {**config, "seed": seed}, data, epochs, on_epoch, metric=exp.metric, mode=exp.mode)
                )
    used = precision or (runs[0].history[-1].get(M.PRECISION) if runs[0].history else None) or "fp32"
    results, preds = [], []
    step(f"evaluating on the test set ({len(dataset.y_test)} images, {len(runs)} model{'s' * (len(runs) > 1)})")
    for run in runs:
        scores = fw.predict(run.model, dataset.x_test, data, config)
        results.append(classification_metrics(dataset.y_test, scores, dataset.classes))
        preds.append(scores.argmax(1))
    return runs, results, preds, {"used": used, "chosen_by": chosen_by}


def saved_model_metrics(
    runs: list[Run], results: list[dict], config: dict, retrained: bool, metric: str, mode: str
) -> tuple[dict, int]:
    """metrics.json: the saved model's test metrics, with every seed's figures and the mean ± std over seeds; returns
    it and the index of the saved run. The saved seed is the one whose kept epoch is best by the search's rule
    (`metric`, `mode`): chosen on validation data, never on the test set. The headline is the mean over all seeds."""
    accs = [r["accuracy"] for r in results]
    seed0 = int(config.get("seed", 0))
    seeds = [
        {"seed": seed0 + k, "accuracy": r["accuracy"], "top5_accuracy": r["top5_accuracy"],
         "macro_f1": r["macro"]["f1"], "kept_epoch": run.best_epoch, "kept_value": run.kept_value}
        for k, (r, run) in enumerate(zip(results, runs, strict=True))
    ]  # fmt: skip
    chosen = 0
    for k in range(1, len(runs)):
        if M.better(seeds[k]["kept_value"], seeds[chosen]["kept_value"], mode):
            chosen = k
    main = dict(results[chosen])
    main["seeds"], main["saved_seed"] = seeds, seeds[chosen]["seed"]
    main["rule"] = {"metric": metric, "mode": mode}
    main["saved_seed_rule"] = f"{M.rule_words(metric, mode)} at its kept epoch" if len(runs) > 1 else "the only run"
    main["mean"], main["std"] = float(np.mean(accs)), float(np.std(accs, ddof=1) if len(accs) > 1 else 0.0)
    main["retrained"] = retrained
    return main, chosen
