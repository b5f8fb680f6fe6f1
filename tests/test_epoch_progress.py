"""Progress inside an epoch: the loops call `progress` after every batch, the trial's writer puts it in a file in the
trial folder (at most every few seconds), and the console's heartbeat shows batches/s and the epoch's ETA for an
epoch that has lasted 30 s or more. Our own output with a fake clock: no Ray, no sleeping."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
from sample_data import lenet_config

from search_driver.console import CompactConsole
from trainables.epoch_progress import PROGRESS_FILE, EpochProgress, eta_seconds, read_progress

LENET = lenet_config()


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_the_torch_loop_calls_progress_after_every_batch(tiny_arrays):
    from trainables.torch_loop import fit

    calls = []
    fit(LENET, tiny_arrays, lambda r, s: None, device=torch.device("cpu"), progress=lambda *a: calls.append(a))
    batches = len(tiny_arrays["y_train"]) // 16
    assert calls == [(e, b, batches) for e in (1, 2) for b in range(1, batches + 1)]


@pytest.mark.slow
def test_the_keras_loop_calls_progress_after_every_batch(tiny_arrays):
    from trainables.keras_loop import fit, setup_tensorflow

    setup_tensorflow(cpus=1)
    calls = []
    config = {**LENET, "model": "keras_resnet18", "stem": "imagenet", "max_epochs": 1}
    fit(config, tiny_arrays, lambda r, s: None, progress=lambda *a: calls.append(a))
    batches = len(tiny_arrays["y_train"]) // 16
    assert calls == [(1, b, batches) for b in range(1, batches + 1)]


def test_the_writer_writes_at_each_epochs_first_batch_then_every_few_seconds(tmp_path):
    clock = Clock(100.0)
    path = tmp_path / "trial_x" / PROGRESS_FILE
    write = EpochProgress(str(path), every_s=5, clock=clock)
    write(1, 1, 10)
    assert read_progress(path.parent) == {
        "epoch": 1,
        "batch": 1,
        "batches": 10,
        "batches_per_s": None,
        "epoch_started_at": 100.0,
        "updated_at": 100.0,
    }
    clock.t = 102.0
    write(1, 3, 10)  # 2 s later: not yet
    assert read_progress(path.parent)["batch"] == 1
    clock.t = 105.0
    write(1, 6, 10)  # 5 batches in 5 s
    state = read_progress(path.parent)
    assert state["batch"] == 6 and state["batches_per_s"] == pytest.approx(1.0)
    assert eta_seconds(state, now=106.0) == pytest.approx(3.0)  # 4 batches at 1/s, 1 s of them gone
    clock.t = 106.0
    write(2, 1, 10)  # a new epoch: written at once, its rate starts afresh
    assert read_progress(path.parent)["epoch"] == 2 and read_progress(path.parent)["batches_per_s"] is None
    assert sorted(p.name for p in path.parent.iterdir()) == [PROGRESS_FILE]  # no temporary file left


def running(trial_id: str, tmp_path) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, status="RUNNING", path=str(tmp_path / f"trial_{trial_id}"), config={})


def test_the_console_shows_batches_per_s_and_eta_of_a_slow_epoch(tmp_path, capsys):
    now = time.time()
    console = CompactConsole("val_loss", "min", ["lr"], max_epochs=10, num_samples=-1, status_every_s=30)
    console.setup()
    slow, fast, old, done = (running(t, tmp_path) for t in ("slow", "fast", "old", "done"))
    for t in (slow, fast, old, done):
        console.on_trial_start(0, [], t)
    # when each started, as the console saw it: "old" 5 s ago, so its progress file is an earlier run's
    console._started_at.update(slow=now - 50, fast=now - 15, old=now - 5, done=now - 65)
    # the slow trial: epoch 3 started 45 s ago, 40 of 351 batches done at 40/44 batches/s, written 1 s ago
    write = EpochProgress(f"{slow.path}/{PROGRESS_FILE}", clock=Clock(now - 45))
    write(3, 1, 351)
    write.clock = Clock(now - 1)
    write(3, 41, 351)
    for trial, start, batch in ((fast, now - 10, 20), (old, now - 100, 5), (done, now - 60, 351)):
        write = EpochProgress(f"{trial.path}/{PROGRESS_FILE}", clock=Clock(start))
        write(1, 1, 351)
        write.clock = Clock(start + 5)
        write(1, batch, 351)
    trials = [slow, fast, old, done, SimpleNamespace(trial_id="gone", status="TERMINATED", path="x", config={})]
    lines = console.progress_lines(trials, now=now)
    assert len(lines) == 1, lines  # fast: 10 s into its epoch; old: a stale file; done: at its last batch
    rate = 40 / 44
    eta = int((351 - 41) / rate - 1)
    assert (
        f"trial_slow in epoch  3/10: batch 41/351, {rate:.2f} batches/s, epoch ETA {eta // 60:02d}:{eta % 60:02d}"
        in lines[0]
    )
    assert len(lines[0]) <= 120
    capsys.readouterr()
    console._last_progress = 0  # the heartbeat is due
    console.on_step_end(0, trials)
    out = capsys.readouterr().out
    assert "trial_slow in epoch  3/10: batch 41/351" in out and "batches/s" in out and "trial_fast" not in out
