"""What the report trains, fitted to its time budget: by default half the search's --time-budget (report.py
--time-budget M to change it; no limit for a search without one).

The plain row of the report's table reproduces the best trial: the same config and seed on the same training split.
When the retrain and the refit would not fit the budget, the report scores the trial's own checkpoint instead (the
weights the search measured, when the trial kept them at its best epoch) and runs the refit only if that fits; a
skipped refit is named with its cost and the flag that runs it. An epoch's cost comes from the search's plan (one
trial on the report's threads, measured before the search) or else from the trial's own epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainables import metric_names as M

REPORT_SHARE = 0.5  # of the search's --time-budget, the default for the report's training


@dataclass(frozen=True)
class TrainingPlan:
    from_checkpoint: bool  # the plain row is the best trial's own checkpoint, not a retrain
    refit: bool
    budget_min: float | None = None
    estimate_min: dict = field(default_factory=dict)  # {"retrain": min, "refit": min} for all seeds
    lines: tuple[str, ...] = ()  # what was decided and why: the console and report.md

    def record(self) -> dict:
        return {
            "budget_min": self.budget_min,
            "estimate_min": self.estimate_min,
            "plain": "the best trial's checkpoint" if self.from_checkpoint else "retrained",
            "refit": self.refit,
            "lines": list(self.lines),
        }


def budget_minutes(exp, args) -> tuple[float | None, str]:
    """(the report's training budget in minutes or None, where it comes from). An extended search's budget is the
    sum of its parts' (analysis/parts.py)."""
    if args.time_budget is not None:
        return float(args.time_budget), f"--time-budget {args.time_budget:g}"
    info = exp.info
    parts = [(info.get("search") or {}).get("time_budget_min")]
    parts += [e.get("time_budget_min") for e in info.get("extensions") or []]
    searched = sum(float(b) for b in parts if b)
    if not searched:
        return None, "no budget (the search had none)"
    return REPORT_SHARE * searched, f"half the search's {searched:g}-minute budget"


def epoch_seconds(exp, threads: int) -> tuple[float, str]:
    """One retrain epoch on the training split: the plan's measurement for the best config's class on `threads`
    threads, else the median of the best trial's own epochs (it may have shared the machine: an upper bound)."""
    config = exp.best_config
    for c in (exp.info.get("plan") or {}).get("classes", []):
        if all(config.get(k) == v for k, v in c["class"].items()) and f"1x{threads}" in c["epoch_s"]:
            return float(c["epoch_s"][f"1x{threads}"]), "the search's plan"
    seconds = exp.curves[exp.best_id].get(M.EPOCH_SECONDS)
    if seconds is None or seconds.dropna().empty:
        return 0.0, "unknown"
    return float(seconds.dropna().median()), "the best trial's epochs"


def plan_training(exp, args, options, threads: int, images: tuple[int, int]) -> TrainingPlan:
    """`images`: (training split, training + validation). `options.refit` as asked; an explicit --refit always runs."""
    if args.no_retrain:
        return TrainingPlan(from_checkpoint=True, refit=False)
    budget, source = budget_minutes(exp, args)
    ran = int(exp.curves[exp.best_id]["training_iteration"].max())
    epochs = args.epochs or ran
    refit_epochs = args.epochs or int(exp.best_row["training_iteration"])
    per_epoch, measured_by = epoch_seconds(exp, threads)
    retrain_min = args.seeds * epochs * per_epoch / 60
    refit_min = args.seeds * refit_epochs * per_epoch * images[1] / images[0] / 60 if options.refit else 0.0
    estimate = {"retrain": round(retrain_min, 1), "refit": round(refit_min, 1)}
    if budget is None or retrain_min + refit_min <= budget:
        return TrainingPlan(False, options.refit, budget, estimate)
    cost = f"retrain {retrain_min:.1f} min" + (f", refit {refit_min:.1f} min" if options.refit else "")
    lines = [
        f"report budget {budget:.1f} min ({source})",
        f"estimated from {measured_by} ({per_epoch:.0f} s an epoch): {cost}",
    ]
    # the trial's checkpoint is the plain retrain itself when the trial kept it at its best epoch
    at_best = ran == int(exp.best_row["training_iteration"])
    usable = at_best and args.seeds == 1 and not args.epochs and not options.ema_decay
    spent = 0.0 if usable else retrain_min
    if usable:
        lines.append(f"the plain row is the best trial's own checkpoint (epoch {ran}, its best): not retrained")
    else:
        why = "--seeds, --epochs or --ema ask for a training" if at_best else "the trial's checkpoint is not its best"
        lines.append(f"retrained all the same: {why}")
    if options.refit and args.refit is not True and spent + refit_min > budget:
        also = " (and the ensemble that needs it)" if options.ensemble else ""
        lines.append(f"refit skipped{also}: it would take ~{refit_min:.1f} min; report.py --refit runs it")
        return TrainingPlan(usable, False, budget, estimate, tuple(lines))
    return TrainingPlan(usable, options.refit, budget, estimate, tuple(lines))
