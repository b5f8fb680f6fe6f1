"""Where a trial is inside its epoch, for the console: a small JSON file in the trial's folder, written by the trial
and read by the driver.

Tune hears from a trial once per epoch (`tune.report` is one `training_iteration`, the unit ASHA counts), so an epoch
of minutes would show nothing for minutes. Between reports the trial writes `epoch_progress.json` next to its
result.json (at the epoch's first batch, then at most every WRITE_EVERY_S) and the console's heartbeat reads it
(search_driver/console.py). A file, not a report: nothing reaches Tune's results, ASHA or the searcher. No framework
import here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

PROGRESS_FILE = "epoch_progress.json"
WRITE_EVERY_S = 5.0  # a line every 30 s on the console needs no more; each write is a few hundred bytes


def trial_dirname(trial_id: str) -> str:
    """A trial's folder in the experiment (Tune's trial_dirname_creator, search_driver/tuner.py)."""
    return f"trial_{trial_id}"


class EpochProgress:
    """`progress(epoch, batch, batches)` for the training loops (their `progress` argument): writes the epoch, the
    batches done and the batches/s since the epoch's first batch to `path`, atomically (a reader never sees half a
    file). `clock` is time.time, replaceable in tests."""

    def __init__(self, path: str, every_s: float = WRITE_EVERY_S, clock: Callable[[], float] = time.time):
        self.path, self.every_s, self.clock = path, every_s, clock
        self.epoch, self.first_batch, self.first_at, self.written_at = None, 0, 0.0, None

    def __call__(self, epoch: int, batch: int, batches: int) -> None:
        now = self.clock()
        if epoch != self.epoch:  # rate from the end of this epoch's first batch (the one known point in time)
            self.epoch, self.first_batch, self.first_at, self.written_at = epoch, batch, now, None
        if self.written_at is not None and now - self.written_at < self.every_s and batch < batches:
            return
        done, seconds = batch - self.first_batch, now - self.first_at
        state = {
            "epoch": epoch,
            "batch": batch,
            "batches": batches,
            "batches_per_s": done / seconds if done > 0 and seconds > 0 else None,
            "epoch_started_at": self.first_at,
            "updated_at": now,
        }
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                json.dump(state, f)
            os.replace(tmp, self.path)
        except OSError:  # progress is a courtesy: a full or read-only disk must not fail the trial
            pass
        self.written_at = now


def read_progress(trial_dir: str) -> dict | None:
    """The last progress a trial wrote in `trial_dir`, or None (not written yet, or not readable)."""
    try:
        with open(os.path.join(trial_dir, PROGRESS_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def eta_seconds(state: dict, now: float) -> float | None:
    """Seconds until the epoch's last training batch, from the rate it reported; None before a rate is known."""
    rate = state.get("batches_per_s")
    if not rate:
        return None
    left = (state["batches"] - state["batch"]) / rate - (now - state["updated_at"])
    return max(0.0, left)
