"""The search's plan (search_driver/plan.py) against a fake cost table: what a budget affords, what is excluded, the
horizon and rungs, the layout, the first trial, what the plan changes in the search, and its lines; then what a
search that produced nothing says, and what report.py says of it."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pandas as pd
import pytest

from search_driver import plan as P
from search_driver import summary


def K(stem: str, batch: int) -> tuple:
    return (("stem", stem), ("batch_size", batch))


CLASSES = [K(s, b) for s in ("cifar", "imagenet") for b in (64, 128, 256)]
DEFAULTS = K("cifar", 128)  # the resnet18 space's DEFAULTS class
# Seconds per epoch of one trial (45,000 + 5,000 images) on a 2-core CPU: alone with 2 threads, and 2 at once with
# 1 thread each (1.86x slower per trial): the 3x3 "cifar" stem ~8x the 7x7 "imagenet" one.
ALONE = {
    K("imagenet", 64): 55,
    K("imagenet", 128): 50,
    K("imagenet", 256): 48,
    K("cifar", 64): 430,
    K("cifar", 128): 410,
    K("cifar", 256): 400,
}
TABLE = {(1, 2): ALONE, (2, 1): {k: v * 1.86 for k, v in ALONE.items()}}


def plan_for(minutes, table=TABLE, classes=CLASSES, defaults=DEFAULTS, space_epochs=20, **given):
    return P.make_plan(
        table,
        classes,
        defaults,
        budget_s=None if minutes is None else minutes * 60,
        space_max_epochs=space_epochs,
        reduction_factor=4,
        given=given,
    )


def test_a_budget_too_small_for_any_first_rung_is_one_line_naming_what_would_do():
    with pytest.raises(P.PlanError) as e:
        plan_for(0.8)  # 48 s: 38 s after start-up, less than any epoch in either layout
    line = str(e.value)
    assert "\n" not in line and line.startswith("--time-budget 0.8 min cannot bring any config to its first rung")
    # one trial on both cores: the cheapest epoch is 48 s (stem imagenet, batch 256), + 10 s start-up -> 1 minute
    assert "the cheapest (stem imagenet, batch 256) takes 48 s per epoch with 1 trial at once x 2 threads" in line
    assert "--time-budget 1 or more" in line and "--image-size" in line and "GPU" in line


def test_a_short_budget_on_a_busy_machine_still_brings_one_trial_per_core_to_a_first_epoch():
    # 1.8x slower than the table (load ~10 on 2 cores): 2.7 min per epoch with 2 trials at once; 5 min cannot bring
    # 4 trials to a first rung, but 3 (at least one per core): the fair share is 580 s / 3
    busy = {lay: {k: v * 1.8 for k, v in cost.items()} for lay, cost in TABLE.items()}
    c = plan_for(5, table=busy).choice
    assert (c.layout, c.max_epochs, c.grace, c.first_rung_trials) == ((2, 1), 1, 1, 3)
    assert c.fair_share_s == pytest.approx(2 * 290 / 3)


def test_the_costly_stem_is_excluded_and_the_first_trial_moves_to_an_affordable_one():
    plan = plan_for(20)
    c = plan.choice
    assert plan.kept == {"stem": ["imagenet"], "batch_size": [64, 128, 256]}
    assert plan.excluded == [K("cifar", 64), K("cifar", 128), K("cifar", 256)]
    assert c.first == K("imagenet", 128)  # DEFAULTS with the fewest cost keys changed: the stem only
    assert c.layout == (2, 1)  # one trial per core: 10 epochs of horizon, against 9 for one trial on both cores


@pytest.mark.parametrize(
    ("minutes", "horizon", "grace", "rungs", "layout"),
    [
        # 20 min: 2 x 1190 s / (2.5 x 89 s) = 10.7 -> 10 epochs; 0.8 x 1190 / 89 = 10.7; first rung at 2 (rf 4)
        (20, 10, 2, [2, 8], (2, 1)),
        # 5 min: 2 x 290 / (2.5 x 89) = 2.6 -> 2 epochs, a rung at 1; both layouts afford 2, two at once more trials
        (5, 2, 1, [1], (2, 1)),
        # 60 min: the space's 20 epochs; the cifar stem reaches its first rung (2 x 763 s < 1795 s) but could not
        # finish 20 epochs (15,000 s) in the budget
        (60, 20, 2, [2, 8], (2, 1)),
    ],
)
def test_horizon_and_rungs_are_what_the_budget_affords(minutes, horizon, grace, rungs, layout):
    plan = plan_for(minutes)
    assert (plan.choice.max_epochs, plan.choice.grace, plan.rungs, plan.choice.layout) == (
        horizon,
        grace,
        rungs,
        layout,
    )
    assert plan.kept["stem"] == ["imagenet"]


def test_one_trial_on_both_cores_wins_when_two_at_once_cannot_afford_the_horizon():
    # a model that scales well with threads: two single-thread trials are 2.6x slower each, not 1.86x
    table = {(1, 2): ALONE, (2, 1): {k: v * 2.6 for k, v in ALONE.items()}}
    plan = plan_for(20, table=table)
    assert plan.choice.layout == (1, 2) and plan.choice.max_epochs == 9


def test_a_cheap_model_keeps_its_space_its_horizon_and_the_defaults():
    classes = [(("batch_size", b),) for b in (64, 128, 256)]
    table = {(2, 1): {classes[0]: 5.0, classes[1]: 4.4, classes[2]: 4.1}, (1, 2): {c: 3.4 for c in classes}}
    plan = plan_for(15, table=table, classes=classes, defaults=classes[1], space_epochs=40)
    c = plan.choice
    assert (c.max_epochs, c.grace, plan.rungs, c.layout, c.first) == (40, 2, [2, 8, 32], (2, 1), classes[1])
    assert plan.excluded == [] and plan.kept == {"batch_size": [64, 128, 256]}


def test_a_given_long_horizon_gets_a_first_rung_the_budget_can_reach():
    classes = [(("batch_size", 16),)]
    plan = plan_for(
        0.75,
        table={(2, 1): {classes[0]: 1.0}, (1, 2): {classes[0]: 0.9}},
        classes=classes,
        defaults=classes[0],
        max_epochs=2000,
    )
    # 35 s of budget: 4 first rungs on 2 at once take 17.5 s of trial-time each, so the rung moves from 100 to 17
    assert plan.choice.max_epochs == 2000 and plan.choice.grace == 17 and plan.choice.layout == (2, 1)


def test_a_class_near_a_limit_is_kept_one_far_beyond_it_is_excluded():
    # 9 epochs of horizon (from the cheapest, 100 s): a 160 s class needs 1,440 s of the 1,190, within measurement
    # noise (EXCLUDE_MARGIN); a 300 s class needs 2,700 s, far beyond
    a, b, c = ((("batch_size", n),) for n in (256, 128, 64))
    choice = P.choose_for(
        (2, 1), {a: 100.0, b: 160.0, c: 300.0}, [a, b, c], b, budget_s=1200, space_max_epochs=20, reduction_factor=4
    )
    assert choice.max_epochs == 9 and choice.affordable == [a, b] and choice.first == b


def test_a_partly_affordable_key_drops_the_value_that_keeps_the_most_classes():
    # only the cifar stem at batch 256 is too costly: dropping batch 256 keeps 4 classes, dropping cifar 3
    cost = {**{k: 40.0 for k in CLASSES}, K("cifar", 256): 10_000.0}
    kept = P.kept_values(CLASSES, [k for k in CLASSES if k != K("cifar", 256)], DEFAULTS, cost)
    assert kept == {"stem": ["cifar", "imagenet"], "batch_size": [64, 128]}


def test_flags_given_on_the_command_line_win_and_the_lines_say_so():
    plan = plan_for(20, max_epochs=14)
    assert plan.choice.max_epochs == 14 and plan.kept["stem"] == ["imagenet"]  # the first-rung rule still excludes
    text = "\n".join(
        P.lines(
            plan,
            cpus=2,
            precision="bf16",
            images="45,000 + 5,000 images",
            measured_s=21,
            model="resnet18",
            max_epochs=14,
        )
    )
    assert "your --max-epochs" in text
    lay = P.layouts(2, cpus_per_trial=2, max_concurrent=None)
    assert lay == [(1, 2)] and P.layouts(2, None, None) == [(1, 2), (2, 1)] and P.layouts(8, None, 2) == [(2, 4)]


def test_the_plan_lines_fit_120_columns_and_name_costs_exclusions_horizon_and_first_trial():
    plan = plan_for(20)
    lines = P.lines(
        plan,
        cpus=2,
        precision="bf16",
        images="45,000 training + 5,000 validation images",
        measured_s=21,
        model="resnet18",
        max_epochs=20,
        at_least=[K("cifar", 256)],
    )
    assert 4 <= len(lines) <= 12 and all(len(line) <= 120 for line in lines)
    text = " ".join(line.strip() for line in lines)
    assert "2 trials at once x 1 thread" in text and "stem cifar, batch 256 >12.4 min" in text
    assert "excluded: stem cifar" in text and "horizon 10 epochs" in text and "rungs at epochs 2, 8" in text
    assert (
        "first trial: DEFAULTS with stem imagenet" in text and "report.py: retrain ~8.3 min (2 threads) + refit" in text
    )
    assert "over 10.0 min (half the budget): the winner's weights, no refit" in text


def test_without_a_budget_the_plan_only_informs():
    plan = plan_for(None)
    assert plan.choice is None and plan.kept == {} and plan.excluded == []
    lines = P.lines(
        plan, cpus=2, precision="bf16", images="images", measured_s=3, model="resnet18", max_epochs=20, num_samples=16
    )
    assert "only informs" in lines[-2] + lines[-1] and all(len(line) <= 120 for line in lines)


def test_apply_changes_the_search_and_leaves_given_flags():
    from ray import tune

    from search_spaces import get_space

    space, defaults = get_space("resnet18")
    args = argparse.Namespace(max_epochs=20, grace_period=2, cpus_per_trial=1, max_concurrent=None)
    plan = plan_for(20)
    changed = P.apply(plan, args, space, defaults, given=set())
    assert P.settings_changes({"applied": changed}) == {"max_epochs": 10}  # grace 2 and 1 CPU per trial: as they were
    assert (args.max_epochs, args.grace_period, args.cpus_per_trial) == (20, 2, 1)  # the settings: not written
    assert space["stem"] == "imagenet" and "stem" not in defaults  # a constant now, so not in Optuna's first point
    assert changed["max_epochs"] == [20, 10] and changed["stem"] == [["cifar", "imagenet"], ["imagenet"]]
    space, defaults = get_space("resnet18")
    args = argparse.Namespace(max_epochs=30, grace_period=3, cpus_per_trial=2, max_concurrent=None)
    changed = P.apply(plan, args, space, defaults, given={"max_epochs", "grace_period", "cpus_per_trial"})
    assert P.settings_changes({"applied": changed}) == {}
    assert isinstance(space["batch_size"], tune.search.sample.Categorical)


def test_cost_classes_of_a_space():
    from search_spaces import get_space

    space, defaults = get_space("resnet18")
    classes, default = P.cost_classes(space, defaults, {"model": "resnet18"})
    assert sorted(classes) == sorted(CLASSES) and default == DEFAULTS
    space, defaults = get_space("lenet5")
    classes, default = P.cost_classes(space, defaults, {"model": "lenet5"})
    assert classes == [(("batch_size", 64),), (("batch_size", 128),), (("batch_size", 256),)]


# ---------------------------------------------------------------------------------------------------------------
# a search that produced nothing


class FakeResults(list):
    num_errors = 0

    def get_dataframe(self, **_):
        return pd.DataFrame()


def test_a_search_without_any_result_says_why_in_one_line_and_fails(capsys, tmp_path):
    args = SimpleNamespace(metric="val_loss", time_budget=15)
    unreported = FakeResults(
        [SimpleNamespace(error=None, metrics={}, path=str(tmp_path / f"trial_{i}")) for i in range(3)]
    )
    assert summary.print_summary(unreported, args, str(tmp_path)) is False
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    # one error, its continuation lines indented (analysis/shell.error_lines: 120 columns)
    assert err[0].startswith("error: no trial reported a result: 3 trials ended with the 15-min")
    assert all(line.startswith("  ") and len(line) <= 120 for line in err[1:])
    text = " ".join(line.strip() for line in err)
    assert "--time-budget" in text and "plan" in text
    failed = FakeResults([SimpleNamespace(error=RuntimeError("boom"), metrics={}, path="p")])
    failed.num_errors = 1
    assert "all 1 trial failed" in summary.nothing_line(failed, args, "exp")


def test_reports_message_fits_a_finished_search_and_a_running_one():
    from analysis.trials import no_result_message

    finished = no_result_message("exp/x", {"name": "x", "finished_at": 1.0})
    assert "its search ended before any trial finished an epoch" in finished and "--time-budget" in finished
    assert "wait" not in finished and "resume" not in finished
    running = no_result_message("exp/x", {"name": "x"})
    assert "wait" in running and "run_search.py --resume --name x" in running
