"""The search's stopping rules, and why they survive a resume.

`Tuner.restore` unpickles the scheduler and the stopper from tuner.pkl, written once when the Tuner was created:
their state of the experiment so far (ASHA's rungs, each trial's best epoch) is not in Tune's snapshots. Both are
rebuilt here from the trials' own result files (the record every other part reads), so a resumed search stops what
the uninterrupted one would have stopped.

- `ResumableASHA`: Ray's ASHAScheduler; each restored trial's reported epochs are replayed into its rungs when Tune
  adds the trial back (`on_trial_add`, called for every restored trial, finished ones included). An extension of a
  finished search is a new Tune run (search_driver/extend.py): the earlier parts' trials are replayed when Tune hands
  the scheduler its metric (`set_search_properties`), before any new trial reports.
- `PatienceStopper`: `run_search.py --patience N` stops a trial after N epochs without a new best validation metric
  (the original Keras project's EarlyStopping(patience=8) as a Tune Stopper). Ray's TrialPlateauStopper is not
  this: it stops when the last results' standard deviation is small, so a noisy metric that never improves keeps
  running and a slowly improving one can stop.
"""

from __future__ import annotations

import json
import logging

from ray.tune.schedulers import ASHAScheduler
from ray.tune.stopper import Stopper

from analysis.experiment import filesystem, is_uri, join
from trainables import metric_names as M

RESULT_FILE = "result.json"  # Tune's per-trial results: one JSON line per reported epoch
log = logging.getLogger(__name__)


def read_rows(trial_dir: str) -> list[dict]:
    """The result rows of the trial folder `trial_dir` (local path or URI), in order; [] when there is no file
    yet. A line being written right now (the last one, cut short) is left out."""
    fs, path = filesystem(join(trial_dir, RESULT_FILE))
    try:
        with fs.open_input_stream(path) as f:
            lines = f.read().decode().splitlines()
    except (FileNotFoundError, OSError):
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


class ResumableASHA(ASHAScheduler):
    """Ray's ASHA, whose rungs a restored experiment refills from the trials' result files, and an extension from
    the earlier parts' trial folders (`earlier_trials`: paths or URIs)."""

    def __init__(self, *, storage_path: str, earlier_trials: list[str] = (), **asha_kwargs):
        super().__init__(**asha_kwargs)
        self.storage_path = storage_path
        self.earlier_trials = list(earlier_trials)

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if not super().set_search_properties(metric, mode, **spec):
            return False
        for folder in self.earlier_trials:  # Tuner.restore unpickles tuner.pkl's copy, taken before any replay
            trial = _Earlier(folder.rstrip("/").rsplit("/", 1)[-1].removeprefix("trial_"))
            super().on_trial_add(None, trial)
            self._replay(trial, read_rows(folder))
        return True

    def _replay(self, trial, rows: list[dict], tune_controller=None) -> None:
        """The same results in the same order record the same rung values; ASHA's decisions are ignored."""
        for row in rows:
            super().on_trial_result(tune_controller, trial, row)
        if trial.status in ("TERMINATED", "ERROR"):  # it will not report again
            super().on_trial_remove(tune_controller, trial)

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if not trial.has_reported_at_least_once:  # a new trial: nothing to replay (the common case, no file read)
            return
        # trial.path is a path on the storage's filesystem: the storage URI's scheme makes it a URI again
        scheme = self.storage_path.split("://")[0] + "://" if is_uri(self.storage_path) else ""
        rows = read_rows(scheme + trial.path)
        self._replay(trial, rows, tune_controller)
        log.debug("trial %s: %d reported epochs replayed into ASHA's rungs", trial.trial_id, len(rows))


class _Earlier:
    """A trial of an earlier part, as ASHA's bookkeeping sees it: an id, ended."""

    status = "TERMINATED"

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


class PatienceStopper(Stopper):
    """Stop a trial once `patience` epochs have passed since its best `metric` (improving by more than
    `min_delta`). Epochs are read from the reports, so a trial retried from a checkpoint keeps its count; after a
    resume the count is rebuilt from the trial's result file (`experiment_path`/trial_<id>)."""

    def __init__(
        self, metric: str, mode: str, patience: int, min_delta: float = 0.0, *, experiment_path: str | None = None
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1 (got {patience})")
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, int(patience), float(min_delta)
        self.experiment_path = experiment_path
        self._best: dict[str, tuple[float, int]] = {}  # trial_id -> (best value, epoch it was reached)

    def _seen(self, value: float, epoch: int, trial_id: str) -> bool:
        """Record one epoch; True when it is a new best."""
        best = self._best.get(trial_id)
        sign = 1.0 if self.mode == "max" else -1.0
        if best is None or sign * (value - best[0]) > self.min_delta:
            self._best[trial_id] = (value, epoch)
            return True
        return False

    def _rebuild(self, trial_id: str, before_epoch: int) -> None:
        if self.experiment_path is None or before_epoch <= 1:
            return
        for row in read_rows(join(self.experiment_path, f"trial_{trial_id}")):
            epoch = int(row.get(M.EPOCH, row.get("training_iteration", 0)))
            if self.metric in row and epoch < before_epoch:
                self._seen(float(row[self.metric]), epoch, trial_id)

    def __call__(self, trial_id: str, result: dict) -> bool:
        if self.metric not in result:
            return False
        value, epoch = float(result[self.metric]), int(result.get(M.EPOCH, result.get("training_iteration", 0)))
        if trial_id not in self._best:  # first sight in this driver: a resumed trial brings its history
            self._rebuild(trial_id, epoch)
        if self._seen(value, epoch, trial_id):
            return False
        return epoch - self._best[trial_id][1] >= self.patience

    def stop_all(self) -> bool:
        return False
