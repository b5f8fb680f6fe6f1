"""Keep searching where a search stopped (issue 26): `--resume NAME --num-samples N / --time-budget M` extends a
finished experiment in place (the same folder and Optuna study, ASHA's rungs as they were, one report over every
trial); `--warm-start NAME` seeds a new experiment's TPE with an old study's trials and runs its best configs first,
leaving the old experiment untouched; bad input is one line each."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from cli_run import one_line_error, run_cli
from ray import tune
from sample_data import ROOT, write_image_folder

from analysis.parts import report_lines
from analysis.trials import load_experiment
from search_driver.optuna_searcher import TUNE_TRIAL_ID, OptunaSearcher
from search_driver.stopping import ResumableASHA
from search_driver.tracking import STUDY_FILE
from trainables import metric_names as M


def journal(exp: Path, name: str | None = None) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(exp / STUDY_FILE)))
    return optuna.load_study(study_name=name or exp.name, storage=storage)


def trial_dirs(exp: Path) -> list[str]:
    return sorted(d.name for d in exp.glob("trial_*") if d.is_dir())


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (names and bytes)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def report(exp: Path, out: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "report.py"), "--experiment", exp, "--no-retrain", "--no-export", "--out", out],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (out / exp.name / "report.md").read_text()


@pytest.fixture()
def finished(lenet5_smoke) -> Path:
    """A finished 2-trial search (--smoke-test: 2 trials x 2 epochs, conftest's); tests extend or warm-start from a
    copy."""
    return lenet5_smoke.exp


def copy_of(exp: Path, tmp_path: Path) -> Path:
    shutil.copytree(exp, tmp_path / exp.name)
    return tmp_path / exp.name


# ---------------------------------------------------------------------------------------------------------------
# Extending a finished search


@pytest.mark.slow
def test_extend_a_finished_search_by_two_trials(finished, tmp_path):
    exp = copy_of(finished, tmp_path)
    before = trial_dirs(exp)
    old = {t.number: (t.params, t.state, t.value) for t in journal(exp).trials}
    written = (exp / STUDY_FILE).read_bytes()
    proc = run_cli("--resume", "smoke", "--num-samples", 2, "--storage-path", tmp_path, "--num-cpus", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (exp / STUDY_FILE).read_bytes().startswith(written)  # the same journal file, continued
    after = trial_dirs(exp)
    assert len(before) == 2 and len(after) == 4 and set(before) < set(after)  # the same folder, 2 more trials
    study = journal(exp)  # the same study: the first two trials as they were, then the two new ones
    assert len(study.trials) == 4
    assert {n: (t.params, t.state, t.value) for n, t in enumerate(study.trials) if n < 2} == old
    ids = [t.user_attrs[TUNE_TRIAL_ID] for t in study.trials]
    assert sorted(f"trial_{i}" for i in ids) == after and len(set(ids)) == 4  # unique trial ids
    info = json.loads((exp / "experiment.json").read_text())
    (ext,) = info["extensions"]
    assert ext["num_samples"] == 2 and ext["time_budget_min"] is None and "finished_at" in info
    assert sorted(f"trial_{i}" for i in ext["earlier_trials"]) == before
    out = proc.stdout
    assert "extending smoke" in out and "4 trials, 0 errors" in out  # the summary covers every trial
    assert "part 1 (search): 2 trials" in out and "part 2 (extension): 2 trials" in out
    assert max(len(line) for line in (out + proc.stderr).splitlines()) <= 120
    md = report(exp, tmp_path / "results")
    assert "4 trials:" in md and "part 2 (extension): 2 trials" in md


@pytest.mark.slow
def test_extend_by_a_time_budget(finished, tmp_path):
    exp = copy_of(finished, tmp_path)
    proc = run_cli("--resume", "smoke", "--time-budget", 0.25, "--storage-path", tmp_path, "--num-cpus", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((exp / "experiment.json").read_text())
    (ext,) = info["extensions"]
    assert ext["time_budget_min"] == 0.25 and ext["num_samples"] is None  # no cap: as many as 15 s allow
    added = len(trial_dirs(exp)) - 2
    assert added >= 1 and len(journal(exp).trials) == 2 + added
    assert (
        "time budget 0.25 min" in proc.stdout and f"part 2 (extension, 0.25 min budget): {added} trial" in proc.stdout
    )
    assert proc.seconds < 120


@pytest.mark.slow
def test_resume_of_a_finished_search_says_how_to_extend_it(finished, tmp_path):
    exp = copy_of(finished, tmp_path)
    before = tree_digest(exp)
    line = one_line_error(run_cli("--resume", "--name", "smoke", "--storage-path", tmp_path), within=30)
    assert "smoke is finished (trials 2 done, 0 errors, 0 not started (of 2)); to extend it:" in line
    assert "python run_search.py --resume smoke --time-budget MINUTES (or --num-samples N)" in line
    assert tree_digest(exp) == before


def main_error(capsys, *argv) -> str:
    """run_search.main in this process, for bad input that stops before data or Ray: exit 2 and one error line."""
    import run_search

    code = run_search.main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    # one error, its continuation lines indented (analysis/shell.error_lines fits it in 120 columns)
    tail = err.split(lines[0], 1)[1].splitlines()[1:]
    return " ".join([lines[0], *[t.strip() for t in tail if t.startswith("  ")]])


def test_a_new_budget_on_an_unfinished_experiment_is_refused(tmp_path, capsys):
    from test_resume import fake_experiment

    fake_experiment(tmp_path, "half", 100, ["TERMINATED", "RUNNING"])
    line = main_error(capsys, "--resume", "half", "--time-budget", 5, "--storage-path", tmp_path)
    assert "half is not finished (trials 1 done" in line and "run_search.py --resume half`" in line


def test_resume_name_forms(tmp_path):
    from test_resume import fake_experiment

    from search_driver.cli import parse_args, settle

    fake_experiment(tmp_path, "a", 100, ["TERMINATED", "RUNNING"])
    for argv in (["--resume", "a"], ["--resume", "--name", "a"]):
        args = settle(parse_args([*argv, "--storage-path", str(tmp_path)]),
                      {"resume", "storage_path"} | ({"name"} if "--name" in argv else set()))  # fmt: skip
        assert args.name == "a" and args.resume is True and args.extend is False


def write_rows(trial_dir: Path, values):
    trial_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"val_loss": v, M.EPOCH: e, "training_iteration": e}) for e, v in enumerate(values, start=1)]
    (trial_dir / "result.json").write_text("\n".join(lines) + "\n")


def test_an_extension_keeps_ashas_rungs(tmp_path):
    """The extension is a new Tune run: its ASHA replays the earlier parts' result files first, so a new trial is
    stopped where the uninterrupted search would have stopped it."""
    for tid, values in (("a", [1.0, 0.9]), ("b", [0.5, 0.4]), ("c", [0.7, 0.6])):
        write_rows(tmp_path / f"trial_{tid}", values)
    kw = dict(time_attr="training_iteration", max_t=8, grace_period=1, reduction_factor=2)
    earlier = [str(tmp_path / f"trial_{t}") for t in "abc"]
    extended = ResumableASHA(storage_path=str(tmp_path), earlier_trials=earlier, **kw)
    extended.set_search_properties("val_loss", "min")
    new = SimpleNamespace(trial_id="d", status="RUNNING", has_reported_at_least_once=False, path=None)
    extended.on_trial_add(None, new)
    assert extended.on_trial_result(None, new, {"val_loss": 2.0, "training_iteration": 1}) == "STOP"
    fresh = ResumableASHA(storage_path=str(tmp_path), **kw)
    fresh.set_search_properties("val_loss", "min")
    fresh.on_trial_add(None, new)
    assert fresh.on_trial_result(None, new, {"val_loss": 2.0, "training_iteration": 1}) == "CONTINUE"


def test_a_trial_id_the_study_already_has_is_never_reused(tmp_path):
    from search_driver.tracking import optuna_study

    first = OptunaSearcher(optuna.samplers.RandomSampler(seed=0), 1, **optuna_study(str(tmp_path), "s"))
    first.set_search_properties("val_loss", "min", {"x": tune.uniform(0, 1)})
    first.on_trial_complete("abc", {"val_loss": first.suggest("abc")["x"], M.EPOCH: 1})
    extension = OptunaSearcher(optuna.samplers.RandomSampler(seed=1), 1, **optuna_study(str(tmp_path), "s"))
    extension.set_search_properties("val_loss", "min", {"x": tune.uniform(0, 1)})
    assert extension.suggest("abc") is None  # Tune then asks again with a fresh id
    assert extension.suggest("def") is not None and len(extension.study.trials) == 2


# ---------------------------------------------------------------------------------------------------------------
# Warm start


def old_study(trials) -> optuna.Study:
    """An in-memory study of (state, value, params, intermediate values)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    dists = {"lr": FloatDistribution(0.001, 1.0, log=True), "batch_size": CategoricalDistribution([64, 128, 256]),
             "dropout": FloatDistribution(0.0, 0.5)}  # fmt: skip
    study = optuna.create_study()
    for i, (state, value, params) in enumerate(trials):
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value, params=params, distributions={k: dists[k] for k in params},
            intermediate_values={1: value + 0.5, 2: value} if value is not None else {},
            user_attrs={TUNE_TRIAL_ID: f"t{i}"},
        ))  # fmt: skip
    return study


S = optuna.trial.TrialState


def test_warm_start_keeps_the_trials_that_fit_the_new_space_and_names_the_rest():
    from search_driver.warm_start import fit_evidence, top_configs

    study = old_study([
        (S.COMPLETE, 0.9, {"lr": 0.05, "batch_size": 128, "dropout": 0.0}),
        (S.PRUNED, 1.4, {"lr": 0.02, "batch_size": 64, "dropout": 0.0}),
        (S.COMPLETE, 0.7, {"lr": 0.5, "batch_size": 128, "dropout": 0.0}),  # lr outside the new range
        (S.COMPLETE, 0.8, {"lr": 0.03, "batch_size": 256, "dropout": 0.4}),  # dropout now fixed at 0.0
        (S.FAIL, None, {"lr": 0.05, "batch_size": 64, "dropout": 0.1}),
        (S.COMPLETE, 0.6, {"lr": 0.05, "dropout": 0.0}),  # no batch_size: the old space had none
    ])  # fmt: skip
    space = {"lr": tune.loguniform(0.01, 0.2), "batch_size": tune.choice([64, 128, 256]), "dropout": 0.0}
    evidence, dropped = fit_evidence(study.trials, space, "old")
    assert [(t.state, t.value, t.params) for t in evidence] == [
        (S.COMPLETE, 0.9, {"lr": 0.05, "batch_size": 128}),
        (S.PRUNED, 1.4, {"lr": 0.02, "batch_size": 64}),
    ]
    assert evidence[0].intermediate_values == {1: 1.4, 2: 0.9} and evidence[0].user_attrs["warm_start_from"] == "old"
    why = dict(dropped)
    assert set(why) == {"trial_t2", "trial_t3", "trial_t4", "trial_t5"}
    assert "lr 0.5 outside [0.01, 0.2]" in why["trial_t2"] and "dropout 0.4, fixed at 0 now" in why["trial_t3"]
    assert "failed" in why["trial_t4"] and "no batch_size" in why["trial_t5"]
    assert top_configs(evidence, "min", 3) == [{"lr": 0.05, "batch_size": 128}, {"lr": 0.02, "batch_size": 64}]


def test_warm_start_refuses_a_space_whose_keys_all_changed():
    from search_driver.cli import UsageError
    from search_driver.warm_start import fit_evidence

    study = old_study([(S.COMPLETE, 0.9, {"lr": 0.05, "batch_size": 128, "dropout": 0.1})])
    with pytest.raises(UsageError, match="shares no searched key"):
        fit_evidence(study.trials, {"width": tune.choice([8, 16]), "depth": tune.randint(1, 4)}, "old")


def test_evidence_goes_into_a_new_study_before_the_first_trials():
    from search_driver.warm_start import fit_evidence, top_configs

    study = old_study(
        [(S.COMPLETE, 0.9, {"lr": 0.05, "batch_size": 128}), (S.PRUNED, 1.4, {"lr": 0.02, "batch_size": 64})]
    )
    space = {"lr": tune.loguniform(0.01, 0.2), "batch_size": tune.choice([64, 128, 256])}
    evidence, _ = fit_evidence(study.trials, space, "old")
    first = top_configs(evidence, "min", 3)
    s = OptunaSearcher(optuna.samplers.TPESampler(seed=0), 2, points_to_evaluate=first, evidence=evidence)
    s.set_search_properties("val_loss", "min", space)
    assert [s.suggest(t) for t in ("n1", "n2")] == first  # the old best configs run first
    states = [t.state for t in s.study.trials]
    assert states == [S.COMPLETE, S.PRUNED, S.RUNNING, S.RUNNING]
    assert [t.value for t in s.study.trials[:2]] == [0.9, 1.4]


@pytest.mark.slow
def test_warm_start_into_a_new_experiment(finished, tmp_path):
    old = copy_of(finished, tmp_path)
    before = tree_digest(old)
    old_trials = journal(old).trials
    new_data = write_image_folder(tmp_path / "new_data", seed=1)  # new images: another data folder
    proc = run_cli("--model", "lenet5", "--data-dir", new_data, "--smoke-test", "--storage-path", tmp_path,
                   "--name", "warm", "--warm-start", "smoke", "--num-cpus", 2)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree_digest(old) == before  # the old experiment's files, byte for byte
    study = journal(tmp_path / "warm")
    prior = [t for t in study.trials if t.user_attrs.get("warm_start_from") == "smoke"]
    assert [(t.params, t.state, t.value) for t in prior] == [(t.params, t.state, t.value) for t in old_trials]
    new = [t for t in study.trials if TUNE_TRIAL_ID in t.user_attrs]
    ranked = sorted(old_trials, key=lambda t: t.value)  # val_loss: lowest first
    assert [t.params for t in new] == [t.params for t in ranked]  # the old best configs are the first trials
    info = json.loads((tmp_path / "warm" / "experiment.json").read_text())
    assert info["warm_start"]["from"] == "smoke" and info["warm_start"]["evidence"] == 2
    assert info["warm_start"]["dropped"] == [] and len(info["warm_start"]["first_trials"]) == 2
    assert "warm start from smoke: 2 of its 2 trials as evidence" in proc.stdout
    (line,) = report_lines(load_experiment(str(tmp_path / "warm")))  # report.md's line (report_markdown)
    assert line.startswith("- warm-started from `smoke`: 2 of its 2 trials as evidence")


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line each


def test_warm_start_bad_input_is_one_line_each(image_folder, tmp_path, capsys):
    from optuna.distributions import FloatDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from test_resume import fake_experiment

    base = ["--data-dir", image_folder, "--smoke-test", "--storage-path", tmp_path]
    assert "no experiment 'nope' to warm-start from" in main_error(capsys, *base, "--warm-start", "nope")
    d = fake_experiment(tmp_path, "other", 100, ["TERMINATED"], finished=True)  # a lenet5 experiment
    info = json.loads((d / "experiment.json").read_text())
    (d / "experiment.json").write_text(json.dumps({**info, "metric": "val_loss", "mode": "min"}))
    line = main_error(capsys, *base, "--model", "resnet18", "--warm-start", "other")
    assert "other searched lenet5" in line and "--model lenet5" in line
    assert "has no Optuna study" in main_error(capsys, *base, "--warm-start", "other")
    # its study searched keys the lenet5 space does not have
    study = optuna.create_study(study_name="other", storage=JournalStorage(JournalFileBackend(str(d / STUDY_FILE))))
    study.add_trial(optuna.trial.create_trial(value=1.0, params={"width": 3.0},
                                              distributions={"width": FloatDistribution(1, 4)}))  # fmt: skip
    before = tree_digest(d)
    line = main_error(capsys, *base, "--warm-start", "other", "--name", "new")
    assert "shares no searched key with other" in line
    assert tree_digest(d) == before and not (tmp_path / "new" / "experiment.json").exists()
    assert "other exists" in main_error(capsys, *base, "--warm-start", "other", "--name", "other")
    line = main_error(capsys, "--resume", "other", "--warm-start", "other", "--storage-path", tmp_path)
    assert "--warm-start starts a new experiment" in line
    line = main_error(capsys, *base, "--warm-start", "other", "--searcher", "random")
    assert "use it with --searcher optuna" in line


def test_an_interrupt_leaves_the_running_trials_to_resume(monkeypatch):
    """Ctrl-C: Tune's clean-up marks the running trials TERMINATED after its last snapshot, which keeps them running
    for --resume; they must stay RUNNING in the study too, or each resumed trial fails on its next epoch (seen on an
    interrupted extension: UpdateFinishedTrialError)."""
    import signal

    from search_driver import interrupts
    from search_driver.optuna_searcher import EndedTrials

    s = OptunaSearcher(optuna.samplers.RandomSampler(seed=0), 3)
    s.set_search_properties("val_loss", "min", {"x": tune.uniform(0, 1)})
    s.suggest("a")
    s.on_trial_result("a", {"val_loss": 1.0, M.EPOCH: 1})
    monkeypatch.setattr(interrupts, "_RECEIVED", [signal.SIGINT])
    EndedTrials(s).on_experiment_end([SimpleNamespace(trial_id="a", status="TERMINATED", last_result={})])
    s.on_trial_result("a", {"val_loss": 0.9, M.EPOCH: 2})  # the resumed trial's next epoch
    assert s.study.trials[0].state.name == "RUNNING"


def test_on_remote_storage_an_extension_starts_from_the_saved_study(tmp_path):
    """s3:// / gs:// keep the study in memory (no journal file): the extension's new study begins with the trials
    of the searcher state the finished search saved, and declines their Tune trial ids."""
    from search_driver.extend import earlier_study

    first = OptunaSearcher(optuna.samplers.RandomSampler(seed=0), 1)  # no storage: an in-memory study
    first.set_search_properties("val_loss", "min", {"x": tune.uniform(0, 1)})
    for tid in ("a", "b"):
        first.on_trial_complete(tid, {"val_loss": first.suggest(tid)["x"], M.EPOCH: 1})
    first.suggest("c")  # never finished: no evidence
    first.save_to_dir(str(tmp_path), session_str="2026-12-06_10-00-00")
    trials = earlier_study(str(tmp_path))
    assert [t.user_attrs[TUNE_TRIAL_ID] for t in trials] == ["a", "b"]
    extension = OptunaSearcher(optuna.samplers.RandomSampler(seed=1), 1, evidence=trials)
    extension.set_search_properties("val_loss", "min", {"x": tune.uniform(0, 1)})
    assert [t.value for t in extension.study.trials] == [t.value for t in trials] and extension.suggest("a") is None
