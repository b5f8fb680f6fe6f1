"""Live views of a real search: optuna-dashboard's API lists its trials, TensorBoard's event files carry hparams,
--mlflow logs runs to a real SQLite store, the console fits 120 columns, and --resume keeps the Optuna study."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from cli_run import run_python
from shared_runs import finished_search

from search_driver.console import CompactConsole
from search_driver.tracking import STUDY_FILE

WIDTH = 120


@pytest.fixture(scope="session")
def live_search(image_folder, tmp_path_factory, torch_home):
    """One smoke search (2 trials x 2 epochs) with every view on: `.exp`, `.db` (its MLflow store), `.proc`."""
    run = finished_search(tmp_path_factory, "live", image_folder, torch_home, "--model", "lenet5", "--mlflow",
                          "sqlite:///{folder}/mlflow.db")  # fmt: skip
    return SimpleNamespace(exp=run.exp, db=run.storage.parent / "mlflow.db", proc=run.proc)


def trial_ids(exp) -> set[str]:
    return {d.name.removeprefix("trial_") for d in exp.glob("trial_*") if d.is_dir()}


def long_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) > WIDTH]


@pytest.mark.slow
def test_console_fits_120_columns(live_search):
    out, err = live_search.proc.stdout, live_search.proc.stderr
    assert long_lines(out) == [] and long_lines(err) == []
    assert "Trial status" not in out and "╭" not in out  # not Ray's table
    for tid in trial_ids(live_search.exp):
        # ASHA may stop the second trial after its first epoch (grace period 1)
        assert f"start trial_{tid}" in out and f"trial_{tid} epoch  1/2" in out and f"trial_{tid} done" in out
    assert "2 done, 0 errors" in out and "best val_loss" in out
    assert f"optuna-dashboard {live_search.exp / STUDY_FILE}" in out


@pytest.mark.slow
def test_optuna_dashboard_lists_the_finished_trials(live_search):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna_dashboard import wsgi
    from werkzeug.test import Client

    client = Client(wsgi(JournalStorage(JournalFileBackend(str(live_search.exp / STUDY_FILE)))))
    studies = client.get("/api/studies").get_json()["study_summaries"]
    assert [s["study_name"] for s in studies] == ["live"]
    study = client.get(f"/api/studies/{studies[0]['study_id']}").get_json()
    # a trial that ran all epochs is Complete, one ASHA stopped is Pruned; none is left Running
    assert sorted(t["state"] for t in study["trials"]) in (["Complete", "Complete"], ["Complete", "Pruned"])
    # each trial's value is its best val_loss at any epoch: the report's rule (analysis/trials.py), not its last
    best = set()
    for d in live_search.exp.glob("trial_*/result.json"):
        best.add(round(min(json.loads(line)["val_loss"] for line in d.read_text().splitlines()), 6))
    assert {round(t["values"][0], 6) for t in study["trials"]} == best
    assert {"lr", "batch_size"} <= {p["name"] for p in study["union_search_space"]}
    assert study["has_intermediate_values"]  # per-epoch values: the dashboard's history and pruning views


@pytest.mark.slow
def test_tensorboard_event_files_carry_hparams(live_search):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    for tid in trial_ids(live_search.exp):
        acc = EventAccumulator(str(live_search.exp / f"trial_{tid}"))
        acc.Reload()
        content = acc.PluginTagToContent("hparams")
        assert set(content) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
        exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        names = [h.name for h in exp.hparam_infos]
        assert "lr" in names and "model" not in names and "seed" not in names  # searched keys, not constants
        assert "ray/tune/val_loss" in [m.name.tag for m in exp.metric_infos]
        assert "ray/tune/val_loss" in acc.Tags()["scalars"]  # the metric's values the hparams table shows
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        params = json.loads((live_search.exp / f"trial_{tid}" / "params.json").read_text())
        assert start.session_start_info.hparams["lr"].number_value == pytest.approx(params["lr"])
        end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
        assert end.session_end_info.status == 1  # STATUS_SUCCESS


@pytest.mark.slow
def test_mlflow_logs_every_trial(live_search):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{live_search.db}")
    exp = client.get_experiment_by_name("live")
    assert exp.artifact_location.startswith((live_search.db.parent / "mlartifacts").as_uri())
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert {"lr", "batch_size", "weight_decay"} <= set(run.data.params)
        # one per epoch: 2, or 1 for a trial ASHA stopped after its first
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) in (1, 2)
        assert [a.path for a in client.list_artifacts(run.info.run_id, "best_checkpoint")] == [
            "best_checkpoint/checkpoint.pt"
        ]
        assert run.data.tags["best_checkpoint_epoch"] in ("1", "2")


def test_a_pickled_searcher_continues_the_same_journal(tmp_path):
    """Tuner.restore unpickles the searcher: its journal storage must reopen the file and go on writing it."""
    import optuna
    from ray import tune

    from search_driver.optuna_searcher import OptunaSearcher
    from search_driver.tracking import optuna_study

    searcher = OptunaSearcher(optuna.samplers.TPESampler(seed=0), max_epochs=1, **optuna_study(str(tmp_path), "s"))
    searcher.set_search_properties("loss", "min", {"x": tune.uniform(0, 1)})
    searcher.on_trial_complete("a", {"loss": searcher.suggest("a")["x"], "epoch": 1})
    restored = pickle.loads(pickle.dumps(searcher))
    restored.on_trial_complete("b", {"loss": restored.suggest("b")["x"], "epoch": 1})
    study = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s" / STUDY_FILE))))  # fmt: skip
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


def fake_trial(tid, status, config=None, last=None):
    return SimpleNamespace(trial_id=tid, status=status, config=config or {}, last_result=last or {}, path=f"/x/{tid}")


def test_console_lines_fit_and_show_time_left(capsys):
    keys = [f"a_rather_long_hyperparameter_name_{i}" for i in range(12)]
    console = CompactConsole("val_loss", "min", keys, max_epochs=20, num_samples=16, time_budget_s=600)
    console.setup()
    console._start = time.time() - 150  # 2.5 min into a 10 min budget
    trial = fake_trial("3f2a9c1d", "RUNNING", config={k: 0.000123456 for k in keys})
    others = [trial, fake_trial("00000001", "TERMINATED"), fake_trial("00000002", "ERROR")]
    console.on_step_begin(0, [])  # a fresh search: 00000001 was stopped before it started (by the time budget)
    console.on_trial_start(0, others, trial)
    console.on_trial_result(0, others, trial, {"val_loss": 0.9, "val_acc": 0.6, "train_loss": 1.0, "epoch": 3})
    console.on_trial_result(0, others, trial, {"val_loss": 1.2, "val_acc": 0.5, "train_loss": 0.8, "epoch": 4})
    console.on_trial_complete(0, others, trial)
    out = capsys.readouterr().out
    assert long_lines(out) == []
    unwrapped = out.replace("\n        ", " ").splitlines()  # continuation lines are indented by 8
    assert "a_rather_long_hyperparameter_name_11=0.0001235" in unwrapped[1]
    status = unwrapped[-1]
    # the ending trial counts as done; 00000001 and the 13 of 16 not created yet as not started; best at any epoch;
    # time left of the budget
    assert "0 running, 1 done, 1 errors, 14 not started (of 16)" in status
    assert "best val_loss 0.9000 (trial_3f2a9c1d, epoch 3)" in status and "7.5 min left of 10" in status


def test_status_line_and_interrupt_summary_count_alike(tmp_path, capsys):
    """Issue 23.4: after an interrupt the status line said `3 done, 1 not started (of 4)` and the next line
    `0 of 4 trials finished, 3 stopped mid-way or pending` (2 had started). One count, one wording."""
    from search_driver.summary import print_interrupted

    console = CompactConsole("val_loss", "min", ["lr"], max_epochs=20, num_samples=4)
    console.setup()
    a, b, c = fake_trial("aaaa", "RUNNING"), fake_trial("bbbb", "RUNNING"), fake_trial("cccc", "PENDING")
    console.on_step_begin(0, [])
    console.on_trial_start(0, [a, b, c], a)
    console.on_trial_start(0, [a, b, c], b)
    for t in (a, b, c):  # Ctrl-C: Tune stops every trial it holds and marks it TERMINATED, with no on_trial_complete
        t.status = "TERMINATED"
    console.on_experiment_end([a, b, c])
    status = capsys.readouterr().out.strip().splitlines()[-1]
    expected = "0 done, 0 errors, 2 stopped mid-way, 2 not started (of 4)"
    assert status.endswith(f"trials 0 running, {expected}"), status

    # what Tune's last snapshot holds for the same moment: the started trials RUNNING, the third PENDING
    exp = tmp_path / "intr"
    exp.mkdir()
    (exp / "experiment.json").write_text(json.dumps({"args": {"num_samples": 4}}))
    state = {"trial_data": [[json.dumps({"status": s}), {}] for s in ("RUNNING", "RUNNING", "PENDING")]}
    (exp / "experiment_state-2026-12-06_10-00-00.json").write_text(json.dumps(state))
    args = SimpleNamespace(name="intr", storage_path=str(tmp_path), address=None)
    print_interrupted(args, str(exp), SimpleNamespace(received=2))
    err = capsys.readouterr().err
    assert f"interrupted (SIGINT): trials {expected}; everything so far is kept in" in err.replace("\n  ", " "), err
    assert long_lines(err) == []


def test_a_resumed_search_does_not_claim_the_whole_budget_is_left(capsys):
    """On --resume Tune goes on with the budget that was left, which it keeps to itself; the console used to count the
    whole --time-budget again from the resume ("1.6 min left of 3" when 0.7 were)."""
    console = CompactConsole("val_loss", "min", ["lr"], max_epochs=20, num_samples=-1, time_budget_s=180)
    console.setup()
    restored = [fake_trial("aaaa", "TERMINATED"), fake_trial("bbbb", "PAUSED")]
    console.on_step_begin(0, restored)
    status = console.status(restored)
    assert status.endswith("trials 1 running, 1 done, 0 errors | the rest of the 3-min budget"), status
    fresh = CompactConsole("val_loss", "min", ["lr"], max_epochs=20, num_samples=-1, time_budget_s=180)
    fresh.setup()
    fresh.on_step_begin(0, [])
    assert fresh.status([]).endswith("min left of 3")


SIGTERM_IN_CALLBACK = """
import sys, weakref
from ray._raylet import raise_sys_exit_with_custom_error_message
from search_driver.ray_compat import trial_process_setup

if sys.argv[1] == "quiet":
    trial_process_setup()
    trial_process_setup()  # idempotent


class Obj:
    pass


def sigterm_arrives(ref):  # what Ray's SIGTERM handler raises, inside a weakref callback
    raise_sys_exit_with_custom_error_message("The process receives a SIGTERM.", exit_code=1)


def other_error(ref):
    raise ValueError("a real bug stays visible")


a, b = Obj(), Obj()
refs = weakref.ref(a, sigterm_arrives), weakref.ref(b, other_error)
del a, b
print("went on")
"""


@pytest.mark.parametrize("mode", ["quiet", "default"])
def test_a_sigterm_exit_in_a_trial_process_is_not_printed_as_a_traceback(mode, tmp_path):
    """Seen in CI: a trial process's stderr, forwarded to the search's console, held an 8-line "Exception ignored"
    traceback ending in Ray's `SystemExit: 1` when the end-of-search SIGTERM met a weakref callback."""
    from sample_data import ROOT

    script = tmp_path / "sigterm.py"
    script.write_text(SIGTERM_IN_CALLBACK)
    proc = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)  # fmt: skip
    assert proc.stdout.strip() == "went on" and "ValueError: a real bug stays visible" in proc.stderr
    assert ("SystemExit" in proc.stderr) == (mode == "default"), proc.stderr


def test_mlflow_loads_only_for_a_search_that_logs_to_it():
    """Importing mlflow (through Ray's MLflow integration) costs about a second of every search's start: the driver's
    modules leave it out, --mlflow brings it in, and experiments pickled with the class's old home still load."""
    code = (
        "import sys, run_search\n"
        "from search_driver import tracking, tuner, console, summary\n"
        "assert 'mlflow' not in sys.modules, 'imported without --mlflow'\n"
        "from types import SimpleNamespace as S\n"
        "cbs = tracking.tracking_callbacks(S(mlflow='sqlite:///x.db', name='n', metric='val_loss'), {})\n"
        "assert 'mlflow' in sys.modules and type(cbs[-1]) is tracking.BestCheckpointMLflow\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from search_driver.mlflow_callback import BestCheckpointMLflow

    old_home = b"csearch_driver.tracking\nBestCheckpointMLflow\n."  # a pickle's reference to the class's old module
    assert pickle.loads(old_home) is BestCheckpointMLflow
