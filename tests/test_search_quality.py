"""The search's rules: best = lowest val_loss at any epoch, the retrain's schedule horizon, diverged trials and ASHA's
cutoffs, the time budget, and importance/plots at one rung."""

from __future__ import annotations

import json
import logging
import math
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from cli_run import run_cli

from analysis.trials import best_report, best_trial_id, versus_first_trial
from trainables import metric_names as M


def curve(losses):
    n = len(losses)
    return pd.DataFrame({"training_iteration": range(1, n + 1), M.EPOCH: range(1, n + 1), M.VAL_LOSS: losses,
                         M.VAL_ACC: [1 - v / 3 for v in losses]})  # fmt: skip


def test_best_is_the_lowest_value_at_any_epoch_not_the_last():
    # a: reaches 0.5 at epoch 2 and ends at 0.9; b: ends lowest (0.6) but never goes below it
    curves = {"a": curve([1.0, 0.5, 0.9]), "b": curve([1.0, 0.7, 0.6])}
    assert best_trial_id(curves, M.VAL_LOSS, "min") == "a"
    assert best_report(curves["a"], M.VAL_LOSS, "min")["training_iteration"] == 2
    assert best_trial_id(curves, M.VAL_ACC, "max") == "a"
    curves["c"] = curve([float("nan"), float("inf")])  # never finite: never best, never a crash
    assert best_trial_id(curves, M.VAL_LOSS, "min") == "a"


FIRST = {"lr": 0.05, "batch_size": 128}
CONFIGS = {"d": {"lr": 0.05, "batch_size": 128, "model": "lenet5"}, "p": {"lr": 0.03, "batch_size": 128},
           "q": {"lr": 0.1, "batch_size": 64}}  # fmt: skip


def test_the_summary_says_whether_the_search_beat_its_first_trial():
    # 50,000 validation images: 2 standard errors of val_loss are 2 x 1.2 / sqrt(50000) = 0.0107
    beat = versus_first_trial(CONFIGS, {"d": 0.82, "p": 0.79, "q": 0.9}, FIRST, M.VAL_LOSS, "min", 50_000)
    assert beat.startswith("the search beat its starting point: best proposed trial p val_loss 0.7900 vs 0.8200")
    assert beat.endswith("a difference of 0.0300, more than 2 standard errors on 50,000 validation images: 0.0107")
    lost = versus_first_trial(CONFIGS, {"d": 0.76, "p": 0.79, "q": 0.9}, FIRST, M.VAL_LOSS, "min", 50_000)
    assert lost.startswith("the search did not beat its starting point: best proposed trial p")
    acc = versus_first_trial(CONFIGS, {"d": 0.7, "p": 0.6}, FIRST, M.VAL_ACC, "max", 5_000)
    assert acc.startswith("the search did not")
    # no first trial (--no-default-trial), or it is not among the trials: nothing to say
    assert versus_first_trial(CONFIGS, {"p": 0.79, "q": 0.9}, FIRST, M.VAL_LOSS, "min", 5_000) is None
    assert versus_first_trial(CONFIGS, {"d": 0.82, "p": 0.79}, None, M.VAL_LOSS, "min", 5_000) is None
    assert "for the first trial d (the space's DEFAULTS)" in beat
    # the plan swapped a cost key of the first trial (ResNet18's 3x3 stem on a CPU): the line says so
    planned = "the space's DEFAULTS with stem imagenet (the plan's)"
    moved = versus_first_trial(CONFIGS, {"d": 0.82, "p": 0.79}, FIRST, M.VAL_LOSS, "min", 5_000, planned)
    assert f"for the first trial d ({planned})" in moved


def test_no_verdict_on_a_difference_the_validation_set_cannot_resolve():
    """Issue 23.4: both trials at chance on 51 validation images, 0.0029 apart, were called a win."""
    same = versus_first_trial(CONFIGS, {"d": 2.3029, "p": 2.3000}, FIRST, M.VAL_LOSS, "min", 51)
    assert same.startswith("no difference the validation set can show: best proposed trial p val_loss 2.3000 vs")
    assert "a difference of 0.0029, within 2 standard errors on 51 validation images: 0.6449" in same
    # val_acc: binomial. 0.74 vs 0.72 on 5,000 images: 2 x sqrt(0.72 x 0.28 / 5000) = 0.0127 < 0.02, a win; on 500
    # images 2 standard errors are 0.0402: no difference
    assert versus_first_trial(CONFIGS, {"d": 0.72, "p": 0.74}, FIRST, M.VAL_ACC, "max", 5_000).startswith(
        "the search beat"
    )
    assert versus_first_trial(CONFIGS, {"d": 0.72, "p": 0.74}, FIRST, M.VAL_ACC, "max", 500).startswith("no difference")
    # a perfect score still has the resolution of one image: 1.0 vs 0.98 on 50 images is no difference
    assert versus_first_trial(CONFIGS, {"d": 0.98, "p": 1.0}, FIRST, M.VAL_ACC, "max", 50).startswith("no difference")
    # an experiment that did not record its validation size: the numbers, no verdict
    assert versus_first_trial(CONFIGS, {"d": 0.82, "p": 0.79}, FIRST, M.VAL_LOSS, "min").endswith("no verdict)")


def test_retrain_keeps_the_trials_schedule_horizon(tiny_arrays):
    """A cosine trial of max_epochs 6 retrained for the 2 epochs it ran must end at cosine(2/6) x lr, not anneal
    to zero in 2 epochs."""
    from analysis.retrain import local_framework, retrain

    config = dict(model="lenet5", lr=1e-2, batch_size=16, max_epochs=6, optimizer="sgd", schedule="cosine",
                  weight_decay=0.0, label_smoothing=0.0, flip=False, crop_padding=0, cutout=0, dropout=0.0, seed=0)  # fmt: skip
    run = retrain(
        local_framework("torch", "cpu"), config, tiny_arrays, 2, lambda r: None, metric=M.VAL_LOSS, mode="min"
    )
    assert [r[M.EPOCH] for r in run.history] == [1, 2]
    assert run.history[-1][M.LR] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 2 / 6)), rel=1e-6)


@pytest.mark.parametrize("healthy,diverged", [(1, 1), (1, 3), (3, 1)])
def test_a_diverged_trial_keeps_ashas_cutoff_finite(tiny_arrays, healthy, diverged):
    """The diverged result comes from the real training loop (lr 1e6) and goes through Ray's own ASHA."""
    from ray.tune.schedulers import ASHAScheduler

    from trainables.torch_device import setup_device
    from trainables.torch_loop import fit

    reports = []
    config = dict(model="lenet5", lr=1e6, batch_size=16, max_epochs=3, optimizer="sgd", schedule="constant",
                  weight_decay=0.0, label_smoothing=0.0, flip=False, crop_padding=0, cutout=0, dropout=0.0, seed=0)  # fmt: skip
    fit(config, tiny_arrays, lambda r, state: reports.append(r), device=setup_device(cpus=1))
    bad = reports[-1]
    assert bad[M.DIVERGED]
    scheduler = ASHAScheduler(metric=M.VAL_LOSS, mode="min", max_t=9, grace_period=1, reduction_factor=3)
    results = [{M.VAL_LOSS: 1.0 + 0.1 * i} for i in range(healthy)] + [dict(bad) for _ in range(diverged)]
    for i, result in enumerate(results):
        trial = SimpleNamespace(trial_id=f"t{i}")
        scheduler.on_trial_add(None, trial)
        scheduler.on_trial_result(None, trial, {**result, "training_iteration": 1})
    for bracket in scheduler._brackets:
        for _milestone, recorded in bracket._rungs:
            if recorded:
                assert np.isfinite(bracket.cutoff(recorded)), recorded


@pytest.mark.slow
def test_time_budget_stops_the_search_and_leaves_a_reportable_experiment(image_folder, tmp_path):
    import report

    budget_min = 0.5  # 30 s; trials of 2,000 epochs cannot finish in it, and there is no --num-samples cap
    t = time.time()
    proc = run_cli("--model", "lenet5", "--data-dir", image_folder, "--time-budget", budget_min, "--max-epochs", 2000,
                   "--storage-path", tmp_path, "--name", "budget", "--num-cpus", 2)  # fmt: skip
    wall = time.time() - t
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "budget" / "experiment.json").read_text())
    assert info["search"]["time_budget_min"] == budget_min and info["search"]["num_samples"] is None
    trials = [d for d in (tmp_path / "budget").iterdir() if (d / "result.json").exists()]
    assert len(trials) >= 2
    epochs = [len((d / "result.json").read_text().splitlines()) for d in trials]
    assert max(epochs) < 2000, "the budget did not stop the trials"
    # Ray's start-up and the data come on top of the budget (tens of seconds on a loaded 2-core machine)
    assert wall < budget_min * 60 + 90, f"{wall:.0f} s for a {budget_min * 60:.0f} s budget"
    assert "Best trials by val_loss (best epoch of each)" in proc.stdout
    # the journal holds what the budget did: no trial left RUNNING, each told its best epoch (the report's rule)
    import optuna

    from search_driver.optuna_searcher import TUNE_TRIAL_ID
    from search_driver.tracking import STUDY_FILE

    journal = optuna.storages.journal.JournalFileBackend(str(tmp_path / "budget" / STUDY_FILE))
    study = optuna.load_study(study_name="budget", storage=optuna.storages.JournalStorage(journal))
    assert "RUNNING" not in {t.state.name for t in study.trials}
    for t in study.trials:
        result = tmp_path / "budget" / f"trial_{t.user_attrs[TUNE_TRIAL_ID]}" / "result.json"
        rows = [json.loads(line) for line in result.read_text().splitlines()] if result.exists() else []
        if rows:
            assert t.value == pytest.approx(min(r["val_loss"] for r in rows)) and len(t.intermediate_values) == len(
                rows
            )
        else:
            assert t.state.name == "FAIL"
    # the plan, measured before the trials: printed before the search starts, recorded, the given horizon kept
    out = proc.stdout
    assert (
        out.index("plan: an epoch of lenet5") < out.index("search: ")
        and "horizon 2000 epochs (your --max-epochs" in out
    )
    plan = info["plan"]
    assert plan["max_epochs"] == 2000 and plan["given_flags"] == ["max_epochs"] and plan["measured"]["seconds"] > 0
    assert info["args"]["grace_period"] == plan["grace_period"] and plan["layout"]["cpus_per_trial"] in (1, 2)

    out = tmp_path / "results"
    assert report.main(["--experiment", str(tmp_path / "budget"), "--out", str(out), "--device", "cpu"]) == 0
    md = (out / "budget" / "report.md").read_text()
    assert (
        f"time budget {budget_min} min" in md
        and "Optuna TPE (multivariate, constant liar" in md
        and "ASHA (grace" in md
    )
    m = json.loads((out / "budget" / "metrics.json").read_text())
    assert m["training_plan"]["budget_min"] == budget_min / 2  # the report's default: half the search's budget

    # a budget nothing fits: the trial's checkpoint stands for the retrain (when kept at its best epoch), no refit
    tight = ["--experiment", str(tmp_path / "budget"), "--out", str(tmp_path / "tight"), "--no-export"]
    assert report.main([*tight, "--time-budget", "0.001", "--device", "cpu"]) == 0
    m = json.loads((tmp_path / "tight" / "budget" / "metrics.json").read_text())
    lines = m["training_plan"]["lines"]
    assert lines[0].startswith("report budget 0.0 min (--time-budget 0.001)") and m["training_plan"]["refit"] is False
    refit_min = m["training_plan"]["estimate_min"]["refit"]
    skipped = (
        f"refit skipped (and the ensemble that needs it): it would take ~{refit_min:.1f} min; report.py --refit runs it"
    )
    assert lines[-1] == skipped
    assert m["retrained"] is (m["training_plan"]["plain"] == "retrained") and m["final_model"]["refit"] is None
    assert (
        "**Report budget** 0.0 min (--time-budget 0.001)" in (tmp_path / "tight" / "budget" / "report.md").read_text()
    )


def test_importance_and_plots_compare_trials_at_one_rung():
    from analysis.trials import Experiment

    args = {"grace_period": 2, "reduction_factor": 3, "max_epochs": 18, "scheduler": "asha"}
    # 10 trials reach rung 2, 8 reach rung 6, 2 reach max_epochs 18
    lengths = [2, 2, 6, 6, 6, 6, 6, 6, 18, 18]
    curves = {f"t{i}": curve([1.0 - 0.01 * e - 0.001 * i for e in range(n)]) for i, n in enumerate(lengths)}
    configs = {tid: {"lr": 0.1} for tid in curves}
    info = {"metric": M.VAL_LOSS, "mode": "min", "args": args}
    exp = Experiment("x", info, None, curves, configs, best_trial_id(curves, M.VAL_LOSS, "min"))
    assert exp.comparison_epoch() == 6
    at = exp.results_at(6)
    assert len(at) == 8 and (at["training_iteration"] <= 6).all()
    assert exp.comparison_epoch(min_trials=11) == 2  # no rung has 11: the highest epoch all 10 reached


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.slow
def test_a_trial_stopped_by_the_budget_before_any_epoch_is_one_summary_line(tmp_path):
    """Ray's ResultGrid warns in 250-column lines about a trial with no result files; the summary counts them instead."""
    import ray
    from ray import tune

    from search_driver.console import quiet_ray_output
    from search_driver.summary import unreported_line

    def first_reports_the_rest_wait(config):  # defined here: Ray pickles it by value for its workers
        if config["x"] > 0:
            time.sleep(120)  # stopped by the budget before its first report
        tune.report({"epoch": 1, "val_loss": 1.0})

    quiet_ray_output()
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(first_reports_the_rest_wait, {"cpu": 1}),
            param_space={"x": tune.grid_search([0, 1, 2, 3])},  # 3: still pending at the end (2 CPUs)
            tune_config=tune.TuneConfig(
                # 20 s: the first trial must report within it even when Ray starts slowly on a busy machine
                metric=M.VAL_LOSS,
                mode="min",
                time_budget_s=20,
                trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
            ),  # as ours
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="late", verbose=0),
        )
        seen = ListHandler()
        logging.getLogger("ray").addHandler(seen)  # Ray's loggers do not propagate to the root (caplog's)
        try:
            results = tuner.fit()
        finally:
            logging.getLogger("ray").removeHandler(seen)
    finally:
        ray.shutdown()
    assert results.num_errors == 0 and len(results) == 4
    late = ", ".join(r.path.rsplit("/", 1)[1] for r in results if (r.config or {}).get("x") != 0)  # pending: None
    assert unreported_line(results) == f"3 trials ended with the search before their first epoch: {late}"
    assert seen.records and not [r for r in seen.records if "Failed to fetch metrics" in r.getMessage()]

    # any other failure to read a trial's results is still Ray's warning
    from search_driver.ray_compat import drop_unreported_warning

    other = logging.LogRecord("x", logging.WARNING, "f", 1, "Failed to fetch metrics for 1 trial(s):\n- t: "
                              "JSONDecodeError('Expecting value')", (), None)  # fmt: skip
    assert drop_unreported_warning(other)
    assert drop_unreported_warning(logging.LogRecord("x", logging.WARNING, "f", 1, "", (), None))  # empty: kept
