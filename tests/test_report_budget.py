"""The report's training fitted to its budget (analysis/report_budget.py): the arithmetic on a fake experiment, and
a report whose plain row is the trial's checkpoint while the refit still trains."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
from test_one_truth import ScriptedFramework

from analysis.evaluation import evaluate_runs
from analysis.final_model import Options
from analysis.report_budget import TrainingPlan, budget_minutes, epoch_seconds, plan_training
from trainables import metric_names as M

REFIT_FLIP = Options(refit=True, ema_decay=0.0, flip_tta=True)
IMAGES = (45_000, 50_000)


def experiment(searched=20.0, ran=10, best=10, plan=True, trial_epoch_s=150.0):
    """A search of `searched` minutes whose best trial ran `ran` epochs and was best at `best`; its plan measured
    60 s an epoch for one trial on 2 threads of the winner's class (stem imagenet, batch 128)."""
    curve = pd.DataFrame(
        [
            {"training_iteration": e, M.EPOCH: e, M.EPOCH_SECONDS: trial_epoch_s, M.VAL_LOSS: 1.0}
            for e in range(1, ran + 1)
        ]
    )
    classes = [
        {"class": {"stem": "cifar", "batch_size": 128}, "epoch_s": {"1x2": 600.0, "2x1": 700.0}},
        {"class": {"stem": "imagenet", "batch_size": 128}, "epoch_s": {"1x2": 60.0, "2x1": 90.0}},
    ]
    return SimpleNamespace(
        info={"search": {"time_budget_min": searched}, **({"plan": {"classes": classes}} if plan else {})},
        best_id="t1",
        curves={"t1": curve},
        best_row={"training_iteration": best},
        best_config={"stem": "imagenet", "batch_size": 128, "seed": 0, "flip": True},
    )


def report_args(**kw):
    return SimpleNamespace(
        **{"no_retrain": False, "epochs": None, "seeds": 1, "refit": None, "time_budget": None, **kw}
    )


def test_the_budget_is_half_the_searchs_unless_given():
    assert budget_minutes(experiment(20.0), report_args()) == (10.0, "half the search's 20-minute budget")
    assert budget_minutes(experiment(20.0), report_args(time_budget=3)) == (3.0, "--time-budget 3")
    assert budget_minutes(experiment(None), report_args())[0] is None
    # an extended search: the sum of its parts' budgets
    extended = experiment(15.0)
    extended.info["extensions"] = [{"time_budget_min": 5.0}, {"time_budget_min": None, "num_samples": 4}]
    assert budget_minutes(extended, report_args()) == (10.0, "half the search's 20-minute budget")


def test_an_epoch_costs_what_the_plan_measured_for_the_winners_class_on_these_threads():
    assert epoch_seconds(experiment(), threads=2) == (60.0, "the search's plan")
    # no plan entry for 1 thread, or no plan: the trial's own epochs (it may have shared the machine)
    assert epoch_seconds(experiment(), threads=1) == (150.0, "the best trial's epochs")
    assert epoch_seconds(experiment(plan=False), threads=2) == (150.0, "the best trial's epochs")


def test_within_the_budget_the_report_trains_as_asked():
    # 10 epochs x 60 s = 10 min retrain + 11.1 min refit: within a 30-minute budget (a 60-minute search)
    plan = plan_training(experiment(60.0), report_args(), REFIT_FLIP, 2, IMAGES)
    assert (plan.from_checkpoint, plan.refit, plan.lines) == (False, True, ())
    assert plan.estimate_min == {"retrain": 10.0, "refit": 11.1}
    # a search without a budget gives the report none
    assert plan_training(experiment(None), report_args(), REFIT_FLIP, 2, IMAGES).refit


def test_over_the_budget_the_checkpoint_stands_for_the_retrain_and_a_refit_that_does_not_fit_is_skipped():
    plan = plan_training(experiment(20.0), report_args(), REFIT_FLIP, 2, IMAGES)
    assert (plan.from_checkpoint, plan.refit) == (True, False)
    assert list(plan.lines[:2]) == [
        "report budget 10.0 min (half the search's 20-minute budget)",
        "estimated from the search's plan (60 s an epoch): retrain 10.0 min, refit 11.1 min",
    ]
    assert "the plain row is the best trial's own checkpoint (epoch 10, its best)" in plan.lines[2]
    assert plan.lines[3] == "refit skipped: it would take ~11.1 min; report.py --refit runs it"
    assert all(len(line) <= 120 for line in plan.lines)  # the console's width
    # a refit that fits alone still runs (20 minutes: 11.1 fits, 21.1 would not)
    plan = plan_training(experiment(40.0), report_args(), REFIT_FLIP, 2, IMAGES)
    assert (plan.from_checkpoint, plan.refit, len(plan.lines)) == (True, True, 3)
    # --refit given: it runs whatever it costs
    assert plan_training(experiment(20.0), report_args(refit=True), REFIT_FLIP, 2, IMAGES).refit


def test_a_checkpoint_that_is_not_the_trials_best_or_a_new_recipe_is_retrained():
    plan = plan_training(experiment(20.0, ran=10, best=7), report_args(), REFIT_FLIP, 2, IMAGES)
    assert not plan.from_checkpoint and "the trial's checkpoint is not its best" in plan.lines[2]
    assert not plan.refit  # 10 + 7.8 minutes do not fit 10
    for kw in ({"seeds": 2}, {"epochs": 5}):
        assert not plan_training(experiment(2.0), report_args(**kw), REFIT_FLIP, 2, IMAGES).from_checkpoint
    ema = Options(refit=False, ema_decay=0.999, flip_tta=True)
    assert not plan_training(experiment(2.0), report_args(), ema, 2, IMAGES).from_checkpoint
    # --no-retrain: the checkpoint, nothing trained, no estimate needed
    assert plan_training(experiment(), report_args(no_retrain=True), REFIT_FLIP, 2, IMAGES) == TrainingPlan(True, False)


class CheckpointedFramework(ScriptedFramework):
    def __init__(self):
        super().__init__()
        self.predicted_models = []

    def from_checkpoint(self, directory, config, num_classes):
        return SimpleNamespace(weights="checkpoint"), 3

    def predict(self, model, x, data, config, *, flip_tta=False):
        self.predicted_models.append(model)
        return super().predict(model, x, data, config, flip_tta=flip_tta)


def tiny_dataset():
    y = np.array([0, 1])
    return SimpleNamespace(
        search_arrays=lambda: {"x_train": np.zeros((2, 3, 4, 4)), "y_train": y, "x_val": np.ones((1, 3, 4, 4)),
                               "y_val": y[:1], "classes": ["a", "b"]},
        y_test=y, x_test=np.zeros((2, 3, 4, 4)), classes=["a", "b"], x_train=np.zeros((2, 3, 4, 4)), num_classes=2,
    )  # fmt: skip


def test_a_report_from_the_checkpoint_still_refits_and_records_why():
    exp = experiment(20.0, ran=3, best=3)
    trial = SimpleNamespace(trial_id="t1")
    checkpoint = SimpleNamespace(as_directory=lambda: contextlib.nullcontext("/ckpt"))
    exp.analysis = SimpleNamespace(trials=[trial], get_last_checkpoint=lambda t: checkpoint)
    exp.metric, exp.mode, exp.path = M.VAL_LOSS, "min", "/x"
    exp.curves["t1"][M.PRECISION] = "fp32"
    dataset = tiny_dataset()
    fw = CheckpointedFramework()
    training = TrainingPlan(from_checkpoint=True, refit=True, budget_min=10.0, lines=("why",))
    ev = evaluate_runs(exp, report_args(precision="trial"), dataset, fw, REFIT_FLIP, training)
    assert ev.plain[0].model.weights == "checkpoint" and not ev.retrained
    assert len(fw.configs) == 1 and ev.refits[0] is not None  # one training: the refit, for the best epoch
    assert ev.refit_epochs == 3 and ev.refit_images == 3
    assert [v.key for v in ev.variants] == ["plain", "refit", "flip_tta", "shipped"]
    assert ev.variants[0].label == "the best trial's checkpoint"
    assert ev.training_plan["plain"] == "the best trial's checkpoint" and ev.training_plan["lines"] == ["why"]


def test_an_ensemble_is_scored_and_shipped_as_the_checkpoint_and_the_refit_together():
    exp = experiment(20.0, ran=3, best=3)
    checkpoint = SimpleNamespace(as_directory=lambda: contextlib.nullcontext("/ckpt"))
    exp.analysis = SimpleNamespace(trials=[SimpleNamespace(trial_id="t1")], get_last_checkpoint=lambda t: checkpoint)
    exp.metric, exp.mode, exp.path = M.VAL_LOSS, "min", "/x"
    fw = CheckpointedFramework()
    both = Options(refit=True, ema_decay=0.0, flip_tta=True, ensemble=True)
    training = TrainingPlan(from_checkpoint=True, refit=True)
    ev = evaluate_runs(exp, report_args(precision="trial"), tiny_dataset(), fw, both, training)
    assert ev.shipped.key == "shipped" and ev.shipped_model(0).weights == ["checkpoint", 3]  # refit: its last epoch
    scored = [m.weights for m in fw.predicted_models]
    assert scored == [
        "checkpoint",
        3,
        "checkpoint",
        ["checkpoint", 3],
        ["checkpoint", 3],
    ]  # plain, refit, tta, ens, all


def test_a_budget_that_is_not_positive_is_one_line(capsys, tmp_path):
    import report

    assert report.main(["--experiment", str(tmp_path), "--time-budget", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --time-budget must be a positive number of minutes (got 0)"
