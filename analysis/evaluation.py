"""The test-set evaluation of a report: retrain the best config once per seed (or load the best trial's checkpoint),
score each model once on the test set, and choose the model to save without looking at the test set.

The search's rule travels with it: `exp.metric` / `exp.mode` (experiment.json) pick each retrain's kept epoch and the
saved seed, and the retrain trains and validates in the best trial's recorded precision unless --precision says
otherwise; the test set is scored in float32, as the exported files run."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from trainables import metric_names as M

from .classification_metrics import classification_metrics
from .final_model import Options, Variant, refit_data, variants
from .progress import bar, step
from .report_budget import TrainingPlan
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


@dataclass
class Evaluation:
    """What the report trained and measured: per seed the plain retrain (and its refit), each table row's test
    metrics per seed, and the options the shipped model (the last row) carries."""

    options: Options
    variants: list[Variant]  # the table's rows; the last one is the shipped model
    plain: list[Run]  # one per seed: the retrain on the training split (or the best trial's checkpoint)
    refits: list[Run | None]  # one per seed: the refit on train + validation (None without --refit)
    results: dict[str, list[dict]]  # variant key -> test metrics per seed
    preds: dict[str, list[np.ndarray]]  # variant key -> predicted classes per seed
    precision: dict  # {"used", "chosen_by"}
    refit_epochs: int | None = None
    refit_images: int | None = None
    refit_epochs_rule: str = ""
    retrained: bool = True  # False: the plain row is the best trial's own checkpoint
    training_plan: dict = field(default_factory=dict)  # report_budget.TrainingPlan.record(): what was trained, why
    combine: Callable | None = None  # the framework's `ensemble`: one model from several

    @property
    def shipped(self) -> Variant:
        return self.variants[-1]

    def model(self, v: Variant, k: int):
        """Row `v`'s model of seed k: the plain one or the refit, its averaged weights or not, or both together."""

        def pick(run: Run):
            return run.averaged if v.averaged else run.model

        if v.ensemble:
            return self.combine([pick(self.plain[k]), pick(self.refits[k])])
        return pick(self.refits[k] if v.refit else self.plain[k])

    def shipped_model(self, k: int):
        return self.model(self.shipped, k)

    def record(self, config: dict) -> dict:
        """metrics.json's "final_model": the options and the table (test accuracy of every row, per seed)."""
        table = []
        for v in self.variants:
            accs = [r["accuracy"] for r in self.results[v.key]]
            table.append(
                {
                    "key": v.key,
                    "label": v.label,
                    "accuracy": accs,
                    "mean": float(np.mean(accs)),
                    "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                }
            )
        record = self.options.record(config, self.refit_epochs, self.refit_images)
        if record["refit"]:
            record["refit"]["epochs_rule"] = self.refit_epochs_rule
        return {**record, "table": table}


def evaluate_runs(exp, args, dataset, fw, options: Options, training: TrainingPlan) -> Evaluation:
    """Retrain (one per seed) or load the best trial's checkpoint (`training.from_checkpoint`), with `options.refit`
    also a refit per seed; then every row of the table (`final_model.variants`) is scored once on the test set."""
    from_checkpoint = training.from_checkpoint
    config = exp.best_config
    data = dataset.search_arrays()
    precision, chosen_by = report_precision(exp, getattr(args, "precision", "trial"))
    if precision is not None:
        config = {**config, M.PRECISION: precision}
    if options.ema_decay:
        config = {**config, "ema_decay": options.ema_decay}
    plain, refits = [], []
    refit_epochs = refit_rule = None
    if options.refit:
        refit_epochs, refit_rule = refit_epoch_count(exp, args)
    if from_checkpoint:
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
        plain.append(Run(model, history, epoch, float(at[-1]) if at else float("nan")))
    else:
        # Without --epochs: the trial exactly (its schedule horizon config["max_epochs"], its epochs). --epochs N is a
        # new recipe: N epochs with the schedule annealing over N.
        epochs = args.epochs or int(exp.curves[exp.best_id]["training_iteration"].max())
        if args.epochs:
            config = {**config, "max_epochs": args.epochs}
    for k in range(len(plain) or args.seeds):  # a retrain and its refit, seed by seed
        seed = int(config.get("seed", 0)) + k
        if not from_checkpoint:
            plain.append(train_one(fw, {**config, "seed": seed}, data, epochs, f"retrain seed {seed}", exp))
        if options.refit:
            what = f"refit seed {seed} (train + val)"
            refits.append(train_one(fw, {**config, "seed": seed}, refit_data(data), refit_epochs, what, exp))
        else:
            refits.append(None)
    used = precision or (plain[0].history[-1].get(M.PRECISION) if plain[0].history else None) or "fp32"
    rows = variants(options, config, retrained=not from_checkpoint)
    ev = Evaluation(
        options,
        rows,
        plain,
        refits,
        {},
        {},
        {"used": used, "chosen_by": chosen_by},
        refit_epochs,
        len(data["y_train"]) + len(data["y_val"]) if options.refit else None,
        refit_rule or "",
        not from_checkpoint,
        training.record(),
        fw.ensemble,
    )
    step(
        f"evaluating on the test set ({len(dataset.y_test)} images, {len(rows)} model{'s' * (len(rows) > 1)} x "
        f"{len(plain)} seed{'s' * (len(plain) > 1)}: {', '.join(v.key for v in rows)})"
    )
    # The test set is scored in float32 whatever the training's precision: the exported files predict.py runs are
    # float32, so metrics.json describes what ships (bf16 autocast moves a few predictions).
    scoring = {**config, M.PRECISION: "fp32"} if fw.name == "torch" else config
    ev.precision["test_scored_in"] = "fp32" if fw.name == "torch" else used
    with bar(len(rows) * len(plain), "test evaluation", "model") as progress:
        for v in rows:
            ev.results[v.key], ev.preds[v.key] = [], []
            for k in range(len(plain)):
                scores = fw.predict(ev.model(v, k), dataset.x_test, data, scoring, flip_tta=v.tta)
                ev.results[v.key].append(classification_metrics(dataset.y_test, scores, dataset.classes))
                ev.preds[v.key].append(scores.argmax(1))
                progress.set_postfix(model=v.key, accuracy=f"{ev.results[v.key][-1]['accuracy']:.4f}")
                progress.update(1)
    return ev


def train_one(fw, config: dict, data: dict, epochs: int, what: str, exp) -> Run:
    """One retrain with its progress bar (validation loss and accuracy, or the training loss of a refit)."""
    with bar(epochs, what, "epoch") as progress:

        def on_epoch(r, progress=progress):
            if math.isnan(r[M.VAL_LOSS]):  # a refit: nothing validated
                progress.set_postfix(train_loss=f"{r[M.TRAIN_LOSS]:.3f}", images_per_s=f"{r[M.IMAGES_PER_S]:.0f}")
            else:
                progress.set_postfix(
                    val_loss=f"{r[M.VAL_LOSS]:.3f}",
                    val_acc=f"{r[M.VAL_ACC]:.3f}",
                    images_per_s=f"{r[M.IMAGES_PER_S]:.0f}",
                )
            progress.update(1)

        return retrain(fw, config, data, epochs, on_epoch, metric=exp.metric, mode=exp.mode)


def refit_epoch_count(exp, args) -> tuple[int, str]:
    """A refit has no validation data to pick its epoch by, so the count is fixed before it starts: the epoch at
    which the best trial reached its best metric in the search (same schedule horizon, so the learning rate at
    every epoch is the trial's), or --epochs N. Not scaled by the data ratio: an epoch is one pass over every image
    either way, and the refit's 11% more images per epoch already give it 11% more steps (docs/report.md)."""
    if args.epochs:
        return args.epochs, f"--epochs {args.epochs}"
    epoch = int(exp.best_row["training_iteration"])
    ran = int(exp.curves[exp.best_id]["training_iteration"].max())
    return epoch, (
        f"the epoch at which the best trial reached its {M.rule_words(exp.metric, exp.mode)} in the "
        f"search ({epoch} of the {ran} it ran)"
    )


def saved_model_metrics(ev: Evaluation, config: dict, metric: str, mode: str) -> tuple[dict, int]:
    """metrics.json: the saved (shipped) model's test metrics, with every seed's figures and the mean ± std over
    seeds; returns it and the index of the saved seed. The saved seed is the one whose plain retrain's kept epoch
    is best by the search's rule (`metric`, `mode`): chosen on validation data, never on the test set. A refit has
    no validation data: the first seed's is saved. The headline is the mean over all seeds."""
    results = ev.results[ev.shipped.key]
    accs = [r["accuracy"] for r in results]
    seed0 = int(config.get("seed", 0))
    seeds = [
        {
            "seed": seed0 + k,
            "accuracy": r["accuracy"],
            "top5_accuracy": r["top5_accuracy"],
            "macro_f1": r["macro"]["f1"],
            "kept_epoch": run.best_epoch,
            "kept_value": run.kept_value,
        }
        for k, (r, run) in enumerate(zip(results, ev.plain, strict=True))
    ]
    chosen = 0
    if not ev.shipped.uses_refit:
        for k in range(1, len(seeds)):
            if M.better(seeds[k]["kept_value"], seeds[chosen]["kept_value"], mode):
                chosen = k
    main = dict(results[chosen])
    main["seeds"], main["saved_seed"] = seeds, seeds[chosen]["seed"]
    main["rule"] = {"metric": metric, "mode": mode}
    if len(seeds) == 1:
        main["saved_seed_rule"] = "the only run"
    elif ev.shipped.uses_refit:
        main["saved_seed_rule"] = "first seed (a refit keeps no validation data to choose by)"
    else:
        main["saved_seed_rule"] = f"{M.rule_words(metric, mode)} at its kept epoch"
    main["mean"], main["std"] = float(np.mean(accs)), float(np.std(accs, ddof=1) if len(accs) > 1 else 0.0)
    main["retrained"] = ev.retrained
    main["training_plan"] = ev.training_plan
    main["final_model"] = ev.record(config)
    return main, chosen
