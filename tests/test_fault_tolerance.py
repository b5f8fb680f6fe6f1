"""What clusters do to a search: a trial's process dies (a lost node, a reclaimed spot instance), the driver is
killed. run_search.py must carry on from checkpoints: --max-failures retries a trial from its last epoch, and
--resume continues an experiment without re-running finished trials.

Real Ray on this machine, LeNet-5 on a generated CIFAR-10-layout root big enough that an epoch takes a moment
(the kills must land mid-trial; they are verified to have, so a too-fast machine fails loudly, not vacuously).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_run import rows, run_cli
from sample_data import ROOT, write_cifar_batches

from trainables import metric_names as M

pytestmark = pytest.mark.slow

EPOCHS = 4


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    # 5 x 600 images (2,700 for training): an epoch of LeNet-5 takes ~0.3-0.8 s on one core of this busy machine.
    return write_cifar_batches(tmp_path_factory.mktemp("ft") / "cifar", per_batch=600)


def search_args(data, storage, name, *extra, epochs=EPOCHS):
    return [
        "--model", "lenet5", "--data-dir", data, "--storage-path", storage, "--name", name, "--num-cpus", 2,
        # one trial at a time, none stopped early: every trial runs `epochs` epochs, so the timeline is known
        "--max-concurrent", 1, "--max-epochs", epochs, "--grace-period", epochs, *extra,
    ]  # fmt: skip


def poll(exp: Path, until, timeout: float = 120, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = until(rows(exp))
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"search ended early: {output(proc)[1][-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out; trials: { {k: len(v) for k, v in rows(exp).items()} }")


def start_search(log: Path, *args) -> subprocess.Popen:
    """run_search.py in the background; its output goes to files (a full pipe would stall it while we poll)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run_search.py"), *map(str, args)],
        cwd=ROOT, stdout=open(log.with_suffix(".out"), "w"), stderr=open(log.with_suffix(".err"), "w"),
    )  # fmt: skip
    proc.log = log
    return proc


def output(proc) -> tuple[str, str]:
    return proc.log.with_suffix(".out").read_text(), proc.log.with_suffix(".err").read_text()


def test_killed_trial_resumes_from_its_last_checkpoint(cifar, tmp_path):
    """SIGKILL a trial's worker process after its first epoch: with --max-failures 1 Tune restarts the trial from
    its epoch-1 checkpoint in a new process, the epochs continue (no epoch is trained twice), the search
    completes, and the trial that had already finished keeps its results."""
    exp = tmp_path / "ft"
    proc = start_search(tmp_path / "ft", *search_args(cifar, tmp_path, "ft", "--num-samples", 2, "--max-failures", 1))
    try:

        def second_trial_started(trials):
            done = [t for t, r in trials.items() if len(r) == EPOCHS]
            running = [t for t, r in trials.items() if 1 <= len(r) < EPOCHS]
            return (done, running) if done and running else None

        (finished,), (victim,) = poll(exp, second_trial_started, proc=proc)
        before = rows(exp)
        pid = before[victim][-1]["pid"]  # Tune records the trial's worker process in every result
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=180)
    finally:
        proc.kill()
    out, err = output(proc)
    assert proc.returncode == 0, err[-3000:]
    after = rows(exp)
    assert after[finished] == before[finished], "a finished trial's results changed"
    killed_at = len(before[victim])
    assert killed_at < EPOCHS, "the kill landed after the trial finished: make the epochs longer"
    epochs = [r[M.EPOCH] for r in after[victim]]
    assert epochs == list(range(1, EPOCHS + 1)), f"epochs restarted or repeated: {epochs}"
    pids = [r["pid"] for r in after[victim]]
    assert pids[:killed_at] == [pid] * killed_at and pid not in pids[killed_at:], "resumed in a new process"
    assert "2 trials, 0 errors" in out


def test_resume_after_the_driver_is_killed(cifar, tmp_path):
    """SIGKILL the driver half a second after the first trial finished; `--resume --name` completes the
    experiment: the finished trial is not re-run, not even its last epoch; the searcher's state is restored
    (3 trials in all, not 3 more); report.py works on the result.

    Tune writes results to a staging folder and copies it to --storage-path with each experiment snapshot, so
    what this test sees in result.json is what a restore sees (run_search snapshots at every trial checkpoint)."""
    exp, epochs = tmp_path / "rs", 3
    proc = start_search(tmp_path / "rs", *search_args(cifar, tmp_path, "rs", "--num-samples", 3, epochs=epochs))
    try:
        (finished,) = poll(exp, lambda trials: [t for t, r in trials.items() if len(r) == epochs] or None, proc=proc)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    before = rows(exp)

    resumed = run_cli("--resume", "--name", "rs", "--storage-path", tmp_path, "--num-cpus", 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = rows(exp)
    assert after[finished] == before[finished], "the finished trial was re-run"
    for trial, results in before.items():  # a trial interrupted mid-way keeps its rows
        assert after[trial][: len(results)] == results
    state = json.loads(max(exp.glob("experiment_state-*.json")).read_text())
    trials = [f"trial_{json.loads(t)['trial_id']}" for t, _ in state["trial_data"]]
    assert len(trials) == 3, "the searcher suggested trials beyond --num-samples"
    assert all(len(after[t]) == epochs for t in trials), {t: len(after[t]) for t in trials}
    assert "3 trials, 0 errors" in resumed.stdout

    report = subprocess.run(
        [sys.executable, str(ROOT / "report.py"), "--experiment", exp, "--no-retrain", "--out", tmp_path / "results"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "results" / "rs" / "metrics.json").exists()
