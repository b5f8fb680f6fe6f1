"""--patience (plateau stopping for every model) and --subset, unit and end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from search_driver.stopping import PatienceStopper
from trainables import metric_names as M


def feed(stopper, trial, values, metric=M.VAL_ACC):
    return [stopper(trial, {metric: v, M.EPOCH: e}) for e, v in enumerate(values, start=1)]


def test_stops_after_patience_epochs_without_a_better_value():
    stopper = PatienceStopper(M.VAL_ACC, "max", patience=2)
    # best 0.5 at epoch 2; epochs 3 and 4 do not beat it -> stop at 4 (not at 3)
    assert feed(stopper, "a", [0.4, 0.5, 0.5, 0.45]) == [False, False, False, True]
    # trials are counted separately; an improvement resets the count
    assert feed(stopper, "b", [0.4, 0.3, 0.6, 0.5, 0.7]) == [False, False, False, False, False]
    assert not stopper.stop_all()


def test_min_mode_and_min_delta():
    stopper = PatienceStopper(M.VAL_LOSS, "min", patience=1, min_delta=0.01)
    assert feed(stopper, "a", [1.0, 0.9, 0.895], metric=M.VAL_LOSS) == [False, False, True]  # 0.005 < min_delta


def test_a_retried_trial_keeps_its_count():
    """After a failure the trial resumes from its checkpoint and re-reports from there: epochs, not calls, count."""
    stopper = PatienceStopper(M.VAL_ACC, "max", patience=3)
    feed(stopper, "a", [0.5, 0.4, 0.4])
    assert stopper("a", {M.VAL_ACC: 0.4, M.EPOCH: 3}) is False  # epoch 3 again: still 2 epochs since the best
    assert stopper("a", {M.VAL_ACC: 0.4, M.EPOCH: 4}) is True


def test_bad_arguments():
    with pytest.raises(ValueError, match="patience"):
        PatienceStopper(M.VAL_ACC, "max", patience=0)
    with pytest.raises(ValueError, match="mode"):
        PatienceStopper(M.VAL_ACC, "maximum", patience=1)


def test_make_stopper_follows_the_search_metric():
    from search_driver.tuner import make_stopper

    assert make_stopper(SimpleNamespace(patience=None, metric="val_loss"), "/x") is None
    stopper = make_stopper(SimpleNamespace(patience=8, metric="val_acc"), "/x")
    assert (stopper.metric, stopper.mode, stopper.patience) == ("val_acc", "max", 8)


def journal_trials(exp):
    import optuna

    from search_driver.tracking import STUDY_FILE

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(exp / STUDY_FILE)))
    return optuna.load_study(study_name=exp.name, storage=storage).trials


@pytest.mark.slow
def test_patience_and_subset_end_to_end(image_folder, tmp_path):
    """--subset 30 keeps 30 training images and 3 validation images, so val_acc takes at most 4 values: it cannot
    improve 8 epochs in a row, and with --patience 1 (ASHA off: grace period = max epochs) the trial must stop
    at the first epoch without a better val_acc."""
    from cli_run import one_line_error, run_cli, trial_results

    proc = run_cli("--model", "lenet5", "--data-dir", image_folder, "--subset", 30, "--patience", 1, "--metric",
                   "val_acc", "--num-samples", 1, "--max-epochs", 8, "--grace-period", 8, "--storage-path", tmp_path,
                   "--name", "patience", "--num-cpus", 2)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "patience" / "experiment.json").read_text())
    assert info["data"]["num_train"] == 30 and info["data"]["num_val"] == 3 and info["args"]["patience"] == 1
    [rows] = trial_results(tmp_path / "patience").values()
    accs = [row[M.VAL_ACC] for row in rows]
    assert 2 <= len(rows) < 8
    assert all(b > a for a, b in zip(accs[:-2], accs[1:-1], strict=True))  # every epoch before the last improved
    assert accs[-1] <= accs[-2]  # and the trial stopped at the first one that did not
    # Optuna was told the truth: stopped early, so PRUNED, its value the best val_acc (the report's rule)
    [trial] = journal_trials(tmp_path / "patience")
    assert trial.state.name == "PRUNED" and trial.value == pytest.approx(max(accs))
    assert sorted(trial.intermediate_values) == [row[M.EPOCH] for row in rows]  # every epoch, the last one too
    assert "at least 1" in one_line_error(run_cli("--data-dir", image_folder, "--patience", 0), within=15)
