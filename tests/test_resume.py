"""--resume: the latest unfinished experiment without --name, one-line refusals, flags that may or may not change,
and --max-failures reaching a restored experiment (issue 12.5)."""

from __future__ import annotations

import argparse
import json
import time

import pytest
from cli_run import one_line_error, run_cli

from search_driver.resume import ResumeError, check_flags, choose_experiment, progress


def fake_experiment(storage, name, started_at, statuses, num_samples=2, finished=False):
    """experiment.json plus a Tune snapshot listing trials with these statuses (the fields resume.py reads)."""
    d = storage / name
    d.mkdir(parents=True)
    info = {"name": name, "started_at": started_at, "args": {"num_samples": num_samples, "model": "lenet5"}}
    if finished:
        info["finished_at"] = started_at + 60
    (d / "experiment.json").write_text(json.dumps(info))
    trials = [[json.dumps({"trial_id": f"t{i}", "status": s}), "{}"] for i, s in enumerate(statuses)]
    if statuses is not None:
        (d / "experiment_state-2026-12-02_06-00-00.json").write_text(json.dumps({"trial_data": trials}))
    return d


def test_resume_picks_the_latest_unfinished_experiment(tmp_path):
    fake_experiment(tmp_path, "old-unfinished", 100, ["TERMINATED", "RUNNING"])
    fake_experiment(tmp_path, "mid-short", 200, ["TERMINATED"])  # killed before the searcher made trial 2
    fake_experiment(tmp_path, "new-finished", 300, ["TERMINATED", "TERMINATED"], finished=True)
    fake_experiment(tmp_path, "newer-all-ended", 400, ["TERMINATED", "ERROR"])  # errored trials count as ended
    name, line = choose_experiment(str(tmp_path), None)
    assert name == "mid-short" and line.endswith(": trials 1 done, 0 errors, 1 not started (of 2)")
    assert progress(str(tmp_path / "old-unfinished")).unfinished
    assert not progress(str(tmp_path / "new-finished")).unfinished
    # an explicit name resumes even a finished experiment (Tune retries errored trials)
    assert choose_experiment(str(tmp_path), "newer-all-ended")[0] == "newer-all-ended"


def test_resume_refusals_name_what_exists(tmp_path):
    with pytest.raises(ResumeError, match="no experiments under"):
        choose_experiment(str(tmp_path), None)
    fake_experiment(tmp_path, "done", 100, ["TERMINATED", "TERMINATED"], finished=True)
    with pytest.raises(ResumeError, match="no unfinished experiment.*latest: done"):
        choose_experiment(str(tmp_path), None)
    with pytest.raises(ResumeError, match="'nope'.*experiments there: done"):
        choose_experiment(str(tmp_path), "nope")


def test_flags_that_cannot_change_on_resume():
    saved = {"model": "lenet5", "max_epochs": 20, "data_dir": "data", "max_failures": 0, "time_budget": 10.0}
    args = argparse.Namespace(model="lenet5", max_epochs=5, data_dir="./data", max_failures=3, time_budget=10.0)
    with pytest.raises(ResumeError) as e:
        check_flags(saved, args, {"model", "max_epochs", "data_dir", "max_failures", "time_budget"})
    msg = str(e.value)
    assert "--max-epochs 20 (given: 5)" in msg and "--model" not in msg and "data-dir" not in msg  # same values
    assert "max-failures" not in msg and "\n" not in msg
    check_flags(saved, args, {"max_failures"})  # may change: no error
    args.time_budget = 30.0
    with pytest.raises(ResumeError, match="--time-budget 10.0 .*remaining|budget left"):
        check_flags(saved, args, {"time_budget"})


@pytest.mark.slow
def test_resume_cli_one_line_errors(tmp_path):
    assert "no experiments under" in one_line_error(run_cli("--resume", "--storage-path", tmp_path), within=20)
    fake_experiment(tmp_path, "x", 100, ["TERMINATED"], num_samples=1)
    line = one_line_error(run_cli("--resume", "--name", "x", "--model", "resnet18", "--storage-path", tmp_path))
    assert "--model lenet5 (given: resnet18)" in line


@pytest.mark.slow
def test_max_failures_given_on_resume_applies(tmp_path):
    """A trial failing on its first two attempts: started with max_failures 0 it errors; restored with
    max_failures 2 it is retried until it succeeds (failures count over the experiment: 1 before the resume, 1
    after). The search's MaxFailures callback carries the resume's limit (recorded in experiment.json, as
    restore_tuner does); without it the pickled limit 0 stays and the resumed trial errors again."""
    import ray
    from ray import tune

    from search_driver.resume import max_failures_callback, record

    def attempts_then_ok(config):
        attempts = config["dir"] / "attempts"
        n = int(attempts.read_text()) + 1 if attempts.exists() else 1
        attempts.write_text(str(n))
        if n <= 2:
            raise RuntimeError(f"attempt {n} fails")
        tune.report({"score": 1.0})

    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "experiment.json").write_text("{}")
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        first = tune.Tuner(
            attempts_then_ok, param_space={"dir": tmp_path},
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="e",
                                      failure_config=tune.FailureConfig(max_failures=0),
                                      callbacks=[max_failures_callback(str(tmp_path / "e"))]),
        ).fit()  # fmt: skip
        assert first.num_errors == 1 and (tmp_path / "attempts").read_text() == "1"
        tuner = tune.Tuner.restore(str(tmp_path / "e"), trainable=attempts_then_ok, resume_errored=True)
        record(str(tmp_path / "e"), resume={"at": time.time(), "max_failures": 2})
        resumed = tuner.fit()
    finally:
        ray.shutdown()
    # attempt 2 failed (failure 2 of the experiment, within the limit 2) and was retried; attempt 3 succeeded
    assert resumed.num_errors == 0 and (tmp_path / "attempts").read_text() == "3"


def test_help_lists_models_defaults_and_every_option():
    from search_driver import cli
    from trainables.models import MODELS

    parser = cli.build_parser()
    text = parser.format_help()
    for name, spec in MODELS.items():
        assert name in text and spec.description in text
    flat = " ".join(text.split())  # argparse wraps help lines
    for fragment in (
        "(default 16;",
        "(default: the model's",
        "(default: data)",
        "(default: lenet5)",
        "--check-cluster",
    ):
        assert fragment in flat, fragment
    for action in parser._actions:  # every option says what it does
        assert action.help, action.option_strings
    assert cli.given_flags(["--resume", "--max-failures", "0"]) == {"resume", "max_failures"}


def test_started_line_is_readable(tmp_path):
    fake_experiment(tmp_path, "a", time.time(), ["RUNNING"])
    _, line = choose_experiment(str(tmp_path), None)
    assert line.startswith("resuming a (started 20")
    assert line.endswith("): trials 0 done, 0 errors, 1 stopped mid-way, 1 not started (of 2)")  # the console's words
