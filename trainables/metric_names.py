"""The metric names every trainable reports and every reader (run_search, analysis, report) uses.

Defined once here; the torch and Keras loops import them, so a rename cannot drift between the two, and both build
their per-epoch report with `epoch_result`, the one divergence policy.
"""

import math
import time
from collections.abc import Callable

TRAIN_LOSS = "train_loss"
TRAIN_ACC = "train_acc"
VAL_LOSS = "val_loss"
VAL_ACC = "val_acc"
EPOCH = "epoch"
LR = "lr"
IMAGES_PER_S = "images_per_s"  # training throughput of the epoch (augmentation + step), images/second
EPOCH_SECONDS = "epoch_seconds"  # wall time of the epoch's training + validation, for overhead accounting
DIVERGED = "diverged"  # True when the loss became NaN/inf; the trial stops after that report
PRECISION = "precision"  # autocast dtype of the epoch's training and evaluation: "bf16", "fp16" or "fp32"

NODE_ID = "node_id"  # not a metric: the Ray node of the trial, added by the Ray trainables (tune_trial.py)

# The keys every per-epoch report of `fit` carries (tests check exactly these); Ray reports add NODE_ID.
REPORT_KEYS = (TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC, EPOCH, LR, IMAGES_PER_S, EPOCH_SECONDS, DIVERGED, PRECISION)

# What a diverged trial (NaN/inf training loss) reports: finite, so ASHA's rung cutoffs (np.nanpercentile over the
# rung) and Optuna's TPE stay finite — an inf there made the cutoff +-inf and switched pruning off for that rung — and
# far above any real cross-entropy (chance on 10 classes is ln 10 = 2.3), so the trial still sorts last.
DIVERGED_LOSS = 1e3


def diverged_metrics() -> dict:
    """The loss/accuracy keys of a diverged epoch's report."""
    return {TRAIN_LOSS: DIVERGED_LOSS, VAL_LOSS: DIVERGED_LOSS, VAL_ACC: 0.0}


def unvalidated_metrics() -> dict:
    """The validation keys of an epoch with no validation data (report.py's refit on train + validation): NaN, so
    no keep-best rule (`better`) ever picks such an epoch and no reader mistakes it for a measured value."""
    return {VAL_LOSS: math.nan, VAL_ACC: math.nan}


def epoch_result(
    *,
    train_loss: float,
    train_acc: float,
    validate: Callable[[], dict] | None,
    epoch: int,
    lr: float,
    images: int,
    train_seconds: float,
    started: float,
    precision: str,
) -> dict:
    """One epoch's report (REPORT_KEYS) from the torch and the Keras loop alike. A NaN/inf training loss skips
    validation and reports `diverged_metrics()` with DIVERGED set, after which the loop stops: ASHA and Optuna must
    see a bad result, not a crash. `validate` None: no validation data (`unvalidated_metrics`). `started`:
    time.perf_counter() at the epoch's start (EPOCH_SECONDS)."""
    diverged = not math.isfinite(train_loss)
    val = diverged_metrics() if diverged else validate() if validate is not None else unvalidated_metrics()
    return {
        TRAIN_LOSS: train_loss,
        TRAIN_ACC: train_acc,
        **val,
        EPOCH: epoch,
        LR: lr,
        IMAGES_PER_S: images / max(train_seconds, 1e-9),
        EPOCH_SECONDS: time.perf_counter() - started,
        DIVERGED: diverged,
        PRECISION: precision,
    }


# The metrics a search may optimise, with their direction.
SEARCH_METRICS = {VAL_LOSS: "min", VAL_ACC: "max"}


def better(value: float, than: float | None, mode: str) -> bool:
    """The one comparison of the search metric: `value` beats `than` (None: nothing to beat yet) in `mode`."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
    if not math.isfinite(value):
        return False
    return than is None or (value < than if mode == "min" else value > than)


def rule_words(metric: str, mode: str) -> str:
    """How the rule reads in text: "lowest val_loss" / "highest val_acc"."""
    return f"{'lowest' if mode == 'min' else 'highest'} {metric}"
