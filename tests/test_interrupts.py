"""Ctrl-C during a search (issue 16.1): the whole process group gets SIGINT, as a terminal sends it. The search
stops cleanly, exits 130 and prints our resume command; `--resume` with no name completes it. A second Ctrl-C
stops at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_run import printed, rows, run_cli
from sample_data import ROOT

pytestmark = pytest.mark.slow

EPOCHS = 10  # per trial; tiny data, so an epoch is ~0.1-0.5 s here: the signal lands while trials run


def start(tmp_path: Path, data, name: str) -> subprocess.Popen:
    args = ["--model", "lenet5", "--data-dir", data, "--storage-path", tmp_path, "--name", name, "--num-cpus", 2,
            "--num-samples", 2, "--max-concurrent", 1, "--max-epochs", EPOCHS, "--grace-period", EPOCHS]  # fmt: skip
    log = tmp_path / name
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run_search.py"), *map(str, args)], cwd=ROOT, start_new_session=True,
        stdout=open(log.with_suffix(".out"), "w"), stderr=open(log.with_suffix(".err"), "w"),
    )  # fmt: skip
    proc.err = log.with_suffix(".err")
    return proc


def wait_for_first_result(exp: Path, proc, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(r for r in rows(exp).values()):
            return
        assert proc.poll() is None, proc.err.read_text()[-3000:]
        time.sleep(0.05)
    raise AssertionError("no trial reported in time")


def finish(proc, timeout: float) -> tuple[int, str, float]:
    t = time.time()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return code, proc.err.read_text(), time.time() - t


def test_ctrl_c_stops_cleanly_and_resume_without_name_completes(image_folder, tmp_path):
    exp = tmp_path / "ctrlc"
    proc = start(tmp_path, image_folder, "ctrlc")
    wait_for_first_result(exp, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
    code, err, _ = finish(proc, timeout=90)
    assert code == 130, err[-3000:]
    # the interpreter that ran the search (a shell without the venv on PATH runs it too: test_printed_commands.py)
    resume_line = f"resume with: {printed(sys.executable)} run_search.py --resume ctrlc --storage-path {tmp_path}"
    assert resume_line in err.replace(" \\\n    ", " "), err[-3000:]
    counts = next(ln for ln in err.splitlines() if ln.startswith("interrupted (SIGINT): trials "))
    assert "done" in counts and "(of 2)" in counts
    assert "Tuner.restore" not in err and "Traceback" not in err
    out = (tmp_path / "ctrlc.out").read_text()
    assert "Best trials" not in out  # no results table that looks like success
    before = rows(exp)
    assert sum(len(r) for r in before.values()) < 2 * EPOCHS, "the search finished before the signal"

    # no --name: the latest unfinished experiment; --max-failures may change on resume (issue 12.5)
    resumed = run_cli("--resume", "--storage-path", tmp_path, "--num-cpus", 2, "--max-failures", 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming ctrlc (started " in resumed.stdout
    after = rows(exp)
    for trial, results in before.items():  # what finished before the interrupt is kept
        assert after[trial][: len(results)] == results
    assert len(after) == 2 and all(len(r) >= EPOCHS for r in after.values())
    assert "2 trials, 0 errors" in resumed.stdout
    info = json.loads((exp / "experiment.json").read_text())
    assert "finished_at" in info and info["resumes"][-1]["max_failures"] == 2 and info["args"]["max_failures"] == 0


def test_second_ctrl_c_stops_at_once(image_folder, tmp_path):
    exp = tmp_path / "twice"
    proc = start(tmp_path, image_folder, "twice")
    wait_for_first_result(exp, proc)
    os.killpg(proc.pid, signal.SIGINT)
    # the second Ctrl-C after the first was handled (two signals before the handler runs are one to the kernel)
    deadline = time.time() + 30
    while "stopping the search and saving its state" not in proc.err.read_text() and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the graceful stop ended before the second Ctrl-C could be sent"
    os.killpg(proc.pid, signal.SIGINT)
    code, err, seconds = finish(proc, timeout=30)
    assert code == 130 and "SIGINT again: stopping now" in err, err[-3000:]
    assert "Traceback" not in err and seconds < 10
