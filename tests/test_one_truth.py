"""One truth from trial to report: the search's rule (metric, mode) reaches the retrain's kept epoch, the saved
seed, the value Optuna is told and the precision of the report; ASHA's rungs and the patience counts survive a
resume; the budget leaves no trial RUNNING in the journal."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
from cli_run import rows
from ray import tune
from sample_data import ROOT

from analysis.evaluation import Evaluation, evaluate_runs, saved_model_metrics
from analysis.final_model import Options, variants
from analysis.report_budget import TrainingPlan
from analysis.retrain import Run, retrain
from search_driver.optuna_searcher import TUNE_TRIAL_ID, EndedTrials, OptunaSearcher
from search_driver.stopping import PatienceStopper, ResumableASHA
from trainables import metric_names as M

# (val_loss, val_acc) per epoch: by val_loss the best epoch is 2, by val_acc it is 3 (the example)
EPOCHS = [(1.00, 0.60), (0.80, 0.70), (0.85, 0.74)]
VALIDATED = {"y_val": np.zeros(1)}  # the retrain keeps the best epoch only when it has validation data
PLAIN = Options(refit=False, ema_decay=0.0, flip_tta=False)
RETRAIN = TrainingPlan(from_checkpoint=False, refit=False)


class ScriptedFramework:
    """A Framework whose fit reports EPOCHS (shifted by the seed) and whose weights are the epoch number."""

    name = "torch"

    def __init__(self, epochs=EPOCHS):
        self.epochs, self.configs, self.predicted = epochs, [], []

    def fit(self, config, data, report, *, checkpoint=None, max_epochs=None):
        self.configs.append(config)
        model = SimpleNamespace(weights=None)
        shift = 0.01 * int(config.get("seed", 0))
        for e, (loss, acc) in enumerate(self.epochs[:max_epochs], start=1):
            model.weights = e
            result = {M.EPOCH: e, M.VAL_LOSS: loss + shift, M.VAL_ACC: acc - shift, M.IMAGES_PER_S: 1.0}
            report({**result, M.PRECISION: config.get(M.PRECISION, "fp32")}, {"w": e})
        return model

    def weights_of(self, state):
        return state["w"]

    def ensemble(self, models):
        return SimpleNamespace(weights=[m.weights for m in models])

    def set_weights(self, model, weights):
        model.weights = weights

    def predict(self, model, x, data, config, *, flip_tta=False):
        self.predicted.append(config)
        probs = np.zeros((len(x), 2), np.float32)
        probs[:, 0] = 1
        return probs


def test_retrain_keeps_the_epoch_the_searchs_metric_picks():
    fw = ScriptedFramework()
    by_acc = retrain(fw, {"seed": 0}, VALIDATED, 3, lambda r: None, metric=M.VAL_ACC, mode="max")
    assert (by_acc.best_epoch, by_acc.model.weights, by_acc.kept_value) == (3, 3, 0.74)
    by_loss = retrain(fw, {"seed": 0}, VALIDATED, 3, lambda r: None, metric=M.VAL_LOSS, mode="min")
    assert (by_loss.best_epoch, by_loss.model.weights, by_loss.kept_value) == (2, 2, 0.80)


def evaluation(runs, results, options=PLAIN) -> Evaluation:
    rows = variants(options, {"flip": True})
    return Evaluation(options, rows, runs, [None] * len(runs), {v.key: results for v in rows}, {}, {})


def test_the_saved_seed_is_chosen_by_the_searchs_metric():
    # seed 0 is better by val_acc (0.74 vs 0.70), seed 1 by val_loss (0.70 vs 0.80): the rule decides
    runs = [Run(None, [], 3, 0.74), Run(None, [], 2, 0.70)]
    results = [{"accuracy": a, "top5_accuracy": 1.0, "macro": {"f1": a}} for a in (0.5, 0.6)]
    m, chosen = saved_model_metrics(evaluation(runs, results), {"seed": 0}, M.VAL_ACC, "max")
    assert chosen == 0 and m["saved_seed"] == 0 and m["rule"] == {"metric": "val_acc", "mode": "max"}
    assert "highest val_acc" in m["saved_seed_rule"]
    runs = [Run(None, [], 2, 0.80), Run(None, [], 2, 0.70)]
    _, chosen = saved_model_metrics(evaluation(runs, results), {"seed": 0}, M.VAL_LOSS, "min")
    assert chosen == 1
    # a shipped refit has no validation data to choose by: the first seed, and metrics.json says why
    refit = Options(refit=True, ema_decay=0.0, flip_tta=False)
    m, chosen = saved_model_metrics(evaluation(runs, results, refit), {"seed": 0}, M.VAL_LOSS, "min")
    assert chosen == 0 and "refit keeps no validation data" in m["saved_seed_rule"]


def fake_experiment(precision: str | None, metric=M.VAL_ACC, mode="max"):
    curve = pd.DataFrame([{M.EPOCH: e, "training_iteration": e, M.VAL_LOSS: 1.0, M.VAL_ACC: 0.5} for e in (1, 2, 3)])
    if precision:
        curve[M.PRECISION] = precision
    return SimpleNamespace(best_id="t1", curves={"t1": curve}, best_config={"seed": 0, "max_epochs": 3},
                           metric=metric, mode=mode, path="/x")  # fmt: skip


def report_args(**kw):
    return SimpleNamespace(**{"no_retrain": False, "epochs": None, "seeds": 1, "precision": "trial", **kw})


def fake_dataset():
    return SimpleNamespace(search_arrays=lambda: dict(VALIDATED), y_test=np.array([0, 1]),
                           x_test=np.zeros((2, 3, 4, 4)), classes=["a", "b"], x_train=np.zeros((2, 3, 4, 4)))  # fmt: skip


def test_the_report_trains_and_evaluates_in_the_trials_precision():
    fw = ScriptedFramework()
    ev = evaluate_runs(fake_experiment("bf16"), report_args(), fake_dataset(), fw, PLAIN, RETRAIN)
    assert fw.configs[0][M.PRECISION] == "bf16"
    assert ev.precision == {"used": "bf16", "chosen_by": "the best trial's (t1)", "test_scored_in": "fp32"}
    assert fw.predicted[0][M.PRECISION] == "fp32"  # the test set as the exported (float32) files score it
    assert ev.plain[0].best_epoch == 3  # and the experiment's rule (val_acc, max) picked the kept epoch
    assert len(ev.preds["plain"]) == 1 and "_pred" not in ev.results["plain"][0]  # predictions beside the metrics
    fw = ScriptedFramework()
    ev = evaluate_runs(fake_experiment("bf16"), report_args(precision="fp32"), fake_dataset(), fw, PLAIN, RETRAIN)
    assert fw.configs[0][M.PRECISION] == "fp32" and ev.precision["chosen_by"] == "--precision fp32"
    fw = ScriptedFramework()
    ev = evaluate_runs(fake_experiment(None), report_args(), fake_dataset(), fw, PLAIN, RETRAIN)
    assert M.PRECISION not in fw.configs[0] and ev.precision["used"] == "fp32"


# ---------------------------------------------------------------------------------------------------------------
# Optuna is told the truth


def searcher(max_epochs=3, mode="min"):
    s = OptunaSearcher(optuna.samplers.RandomSampler(seed=0), max_epochs)
    s.set_search_properties("val_loss" if mode == "min" else "val_acc", mode, {"x": tune.uniform(0, 1)})
    return s


def report_epochs(s, tid, losses, *, complete=True):
    s.suggest(tid)
    for e, loss in enumerate(losses[:-1], start=1):
        s.on_trial_result(tid, {"val_loss": loss, M.EPOCH: e})
    last = {"val_loss": losses[-1], M.EPOCH: len(losses)}
    if complete:
        s.on_trial_complete(tid, result=last)  # Tune passes the epoch a trial stopped at only here
    return s


def by_tune_id(study):
    return {t.user_attrs[TUNE_TRIAL_ID]: t for t in study.trials}


def test_optuna_is_told_each_trials_best_epoch_and_how_it_ended():
    s = searcher()
    report_epochs(s, "full", [1.0, 0.7, 0.9])  # all 3 epochs, best at epoch 2
    report_epochs(s, "asha", [1.2, 1.1])  # stopped at epoch 2 (ASHA, or --patience)
    s.suggest("failed")
    s.on_trial_result("failed", {"val_loss": 2.0, M.EPOCH: 1})
    s.on_trial_complete("failed", error=True)
    s.suggest("never")
    s.on_trial_complete("never")  # ended before its first epoch
    t = by_tune_id(s.study)
    assert (t["full"].state.name, t["full"].value) == ("COMPLETE", 0.7)
    assert t["full"].intermediate_values == {1: 1.0, 2: 0.7, 3: 0.7}  # best so far, the last epoch included
    assert (t["asha"].state.name, t["asha"].value) == ("PRUNED", 1.1)
    assert t["asha"].intermediate_values == {1: 1.2, 2: 1.1}
    assert t["failed"].state.name == "FAIL" and t["never"].state.name == "FAIL"


def test_a_diverged_trial_is_complete_with_its_best_epoch():
    s = searcher()
    s.suggest("d")
    s.on_trial_result("d", {"val_loss": 1.5, M.EPOCH: 1})
    s.on_trial_complete("d", result={"val_loss": M.DIVERGED_LOSS, M.EPOCH: 2, M.DIVERGED: True})
    (t,) = s.study.trials
    assert (t.state.name, t.value) == ("COMPLETE", 1.5)


def test_trials_the_time_budget_ended_are_told_and_interrupted_ones_are_not():
    s = searcher()
    report_epochs(s, "budget", [1.0, 0.8], complete=False)
    report_epochs(s, "interrupted", [1.3], complete=False)
    ended = [
        SimpleNamespace(trial_id="budget", status="TERMINATED", last_result={"val_loss": 0.8, M.EPOCH: 2}),
        SimpleNamespace(trial_id="interrupted", status="RUNNING", last_result={"val_loss": 1.3, M.EPOCH: 1}),
    ]
    EndedTrials(s).on_experiment_end(ended)
    t = by_tune_id(s.study)
    assert (t["budget"].state.name, t["budget"].value) == ("PRUNED", 0.8)
    assert t["budget"].intermediate_values == {1: 1.0, 2: 0.8}  # the last epoch reported too
    assert t["interrupted"].state.name == "RUNNING"  # --resume continues it


def test_a_restored_searcher_does_not_tell_a_finished_trial_twice():
    s = searcher()
    report_epochs(s, "a", [1.0], complete=False)
    snapshot = pickle.dumps(s)  # taken before the trial ended
    s.on_trial_complete("a", result={"val_loss": 0.9, M.EPOCH: 3})
    restored = pickle.loads(snapshot)
    restored._study = s.study  # the journal is ahead of the snapshot
    restored.on_trial_complete("a", result={"val_loss": 0.9, M.EPOCH: 3})  # would raise on a finished trial
    assert [t.state.name for t in s.study.trials] == ["COMPLETE"]


# ---------------------------------------------------------------------------------------------------------------
# ASHA's rungs and the patience counts survive a resume


def write_rows(trial_dir: Path, values, metric="val_loss"):
    trial_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({metric: v, M.EPOCH: e, "training_iteration": e}) for e, v in enumerate(values, start=1)]
    (trial_dir / "result.json").write_text("\n".join(lines) + "\n")


def fake_trial(tmp_path, tid, values, status):
    path = tmp_path / f"trial_{tid}"
    write_rows(path, values)
    return SimpleNamespace(trial_id=tid, status=status, has_reported_at_least_once=bool(values), path=str(path))


def asha(tmp_path):
    return ResumableASHA(storage_path=str(tmp_path), metric="val_loss", mode="min", time_attr="training_iteration",
                         max_t=8, grace_period=1, reduction_factor=2)  # fmt: skip


def test_asha_rungs_are_rebuilt_from_the_result_files(tmp_path):
    pristine = pickle.dumps(asha(tmp_path))  # tuner.pkl: the scheduler as it was when the Tuner was created
    restored = pickle.loads(pristine)
    # Tune adds the restored trials back: two finished ones that reached epoch 2, one that will run again
    for tid, values, status in (("a", [1.0, 0.9], "TERMINATED"), ("b", [0.5, 0.4], "TERMINATED"),
                                ("c", [0.7], "PENDING")):  # fmt: skip
        restored.on_trial_add(None, fake_trial(tmp_path, tid, values, status))
    new = SimpleNamespace(trial_id="d", status="RUNNING", has_reported_at_least_once=False, path=None)
    restored.on_trial_add(None, new)
    # d's epoch 1 is worse than the rung's median: the uninterrupted ASHA stops it, a fresh one would not
    assert restored.on_trial_result(None, new, {"val_loss": 2.0, "training_iteration": 1}) == "STOP"
    fresh = pickle.loads(pristine)
    fresh.on_trial_add(None, new)
    assert fresh.on_trial_result(None, new, {"val_loss": 2.0, "training_iteration": 1}) == "CONTINUE"


def test_patience_counts_are_rebuilt_from_the_result_files(tmp_path):
    write_rows(tmp_path / "trial_t", [1.0, 0.8, 0.9])  # best at epoch 2, then one epoch without improvement
    restored = PatienceStopper("val_loss", "min", patience=2, experiment_path=str(tmp_path))
    assert restored("t", {"val_loss": 0.95, M.EPOCH: 4}) is True  # epoch 4 is the 2nd epoch past the best
    fresh = PatienceStopper("val_loss", "min", patience=2)
    assert fresh("t", {"val_loss": 0.95, M.EPOCH: 4}) is False


@pytest.mark.slow
def test_a_resume_after_a_driver_kill_stops_what_the_uninterrupted_search_stops(tmp_path):
    """tests/asha_resume_driver.py: trials A, B, C one at a time; the uninterrupted ASHA stops C at epoch 1. Kill
    the driver after B finished, restore with Tune's own Tuner.restore: C is still stopped at epoch 1."""
    driver = [sys.executable, str(ROOT / "tests" / "asha_resume_driver.py"), str(tmp_path), "kill"]
    exp = tmp_path / "kill"
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen(driver, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while sum(len(r) == 3 for r in rows(exp).values()) < 2:
            assert time.time() < deadline and proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(1.0)  # Tune's forced snapshot after B's last checkpoint
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert sum(len(r) > 0 for r in rows(exp).values()) == 2, "the kill landed after C reported: lengthen its wait"
    restored = subprocess.run([*driver, "restore"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert restored.returncode == 0, restored.stdout[-2000:] + restored.stderr[-3000:]
    curves = sorted(len(r) for r in rows(exp).values())
    assert curves == [1, 3, 3], curves  # C stopped at ASHA's first rung, as without the kill


def test_a_trial_whose_named_checkpoint_was_deleted_resumes_from_its_newest(tmp_path, capsys):
    """The window Tune leaves between deleting a trial's previous checkpoint and uploading the snapshot that names
    the new one: a resumed trial finds the newest checkpoint in its own folder, skipping a half-written one."""
    from trainables.tune_trial import newest_checkpoint

    class Files:
        def load_checkpoint(self, directory):
            return json.loads((Path(directory) / "state.json").read_text())

    for name, text in (("checkpoint_000001", '{"epoch": 1}'), ("checkpoint_000002", '{"epoch": 2}'),
                       ("checkpoint_000003", '{"epo')):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.json").write_text(text)
    assert newest_checkpoint(Files(), str(tmp_path)) == {"epoch": 2}
    assert "checkpoint_000002" in capsys.readouterr().err
    assert newest_checkpoint(Files(), str(tmp_path / "missing")) is None


def test_the_benchs_told_last_baseline_takes_make_searchers_place():
    """bench/search_efficiency.py --compare-told swaps Ray's OptunaSearch in for tuner.make_searcher: the same
    parameters, or the baseline's first search crashes (it did on 2026-12-07, after make_searcher gained `prior`)."""
    import importlib.util
    import inspect

    from search_driver import tuner

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("search_efficiency", ROOT / "bench" / "search_efficiency.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    ours, baseline = inspect.signature(tuner.make_searcher), inspect.signature(bench.rays_optuna_search)
    assert list(baseline.parameters) == list(ours.parameters)
