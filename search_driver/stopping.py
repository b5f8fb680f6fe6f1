"""Plateau stopping for every model: `run_search.py --patience N` stops a trial after N epochs without a new best
validation metric, the original Keras project's EarlyStopping(patience=8) as a Ray Tune Stopper.

Ray's TrialPlateauStopper is not this: it stops when the last results' standard deviation is small, so a noisy
metric that never improves keeps running and a slowly improving one can stop.
"""

from __future__ import annotations

from ray.tune.stopper import Stopper

from . import metric_names as M


class PatienceStopper(Stopper):
    """Stop a trial once `patience` epochs have passed since its best `metric` (improving by more than
    `min_delta`). Epochs are read from the reports, so a trial retried from a checkpoint keeps its count."""

    def __init__(self, metric: str, mode: str, patience: int, min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1 (got {patience})")
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, int(patience), float(min_delta)
        self._best: dict[str, tuple[float, int]] = {}  # trial_id -> (best value, epoch it was reached)

    def __call__(self, trial_id: str, result: dict) -> bool:
        if self.metric not in result:
            return False
        value, epoch = float(result[self.metric]), int(result.get(M.EPOCH, result.get("training_iteration", 0)))
        best = self._best.get(trial_id)
        sign = 1.0 if self.mode == "max" else -1.0
        if best is None or sign * (value - best[0]) > self.min_delta:
            self._best[trial_id] = (value, epoch)
            return False
        return epoch - best[1] >= self.patience

    def stop_all(self) -> bool:
        return False
