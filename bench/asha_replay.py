"""Replay Ray's ASHA on finished FIFO runs: what grace period and reduction factor would have cost and found.

    # the FIFO + random runs bench/search_efficiency.py leaves in its --storage-path
    python bench/asha_replay.py /tmp/se/fifo-random-seed0 /tmp/se/fifo-random-seed1 /tmp/se/fifo-random-seed2

In a FIFO run every trial trains every epoch, so its learning curves say what any early-stopping rule would have
seen. The replay feeds them, epoch by epoch, to Ray's own `ASHAScheduler` (`on_trial_add` / `on_trial_result`, the
calls Tune makes) in a discrete-event simulation of the same number of concurrent slots: trials start in their
recorded order (and, for the spread, in random orders), each epoch takes the trial's measured epoch time, and a
stopped trial frees its slot at once. No training runs, so a grid of settings costs seconds.

Per setting: trial-epochs as a share of FIFO's, the best val_acc any epoch that would have run reached, and how
often the trial FIFO ranks best (lowest val_loss) survives to its best epoch. The searcher is the FIFO run's (random
search); with TPE later trials are better, so more of them are promoted and the real share is higher.
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainables import metric_names as M  # noqa: E402


def read_curves(experiment: str | Path) -> list[dict]:
    """One dict per trial, in start order: val_loss, val_acc and epoch seconds per epoch."""
    trials = []
    for d in Path(experiment).glob("trial_*"):
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines() if line.strip()]
        if rows:
            trials.append({"start": rows[0]["timestamp"] - rows[0]["time_this_iter_s"],
                           "loss": [r[M.VAL_LOSS] for r in rows], "acc": [r[M.VAL_ACC] for r in rows],
                           "seconds": [r[M.EPOCH_SECONDS] for r in rows]})  # fmt: skip
    return sorted(trials, key=lambda t: t["start"])


def replay(trials: list[dict], grace: int, rf: float, max_t: int, slots: int, order=None) -> dict:
    """Ray's ASHAScheduler driven by the recorded curves; returns trial-epochs, best val_acc and the stop epochs."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    sched = ASHAScheduler(time_attr="training_iteration", metric=M.VAL_LOSS, mode="min", max_t=max_t,
                          grace_period=grace, reduction_factor=rf)  # fmt: skip
    order = list(range(len(trials))) if order is None else list(order)
    events, ran = [], [0] * len(trials)  # events: (time, seq, trial index, epoch finished)
    seq, clock = 0, 0.0
    pending = iter(order)

    def start(i, now):
        nonlocal seq
        sched.on_trial_add(None, SimpleNamespace(trial_id=str(i)))
        heapq.heappush(events, (now + trials[i]["seconds"][0], seq, i, 1))
        seq += 1

    for i in [next(pending, None) for _ in range(slots)]:
        if i is not None:
            start(i, clock)
    while events:
        clock, _, i, epoch = heapq.heappop(events)
        ran[i] = epoch
        result = {"training_iteration": epoch, M.VAL_LOSS: trials[i]["loss"][epoch - 1]}
        action = sched.on_trial_result(None, SimpleNamespace(trial_id=str(i)), result)
        if action == TrialScheduler.CONTINUE and epoch < min(max_t, len(trials[i]["loss"])):
            heapq.heappush(events, (clock + trials[i]["seconds"][epoch], seq, i, epoch + 1))
            seq += 1
            continue
        nxt = next(pending, None)  # the slot is free
        if nxt is not None:
            start(nxt, clock)
    best = min(range(len(trials)), key=lambda k: min(trials[k]["loss"]))
    return {
        "trial_epochs": sum(ran),
        "best_val_acc": max(max(t["acc"][:n]) for t, n in zip(trials, ran, strict=True) if n),
        "found_best": ran[best] > int(np.argmin(trials[best]["loss"])),
    }


def grid(experiments, graces, rfs, slots: int, orders: int = 50) -> list[dict]:
    rows = []
    runs = [read_curves(e) for e in experiments]
    for grace in graces:
        for rf in rfs:
            ratios, gaps, found = [], [], []
            for trials in runs:
                max_t = max(len(t["loss"]) for t in trials)
                fifo_epochs = sum(len(t["loss"]) for t in trials)
                fifo_best = max(max(t["acc"]) for t in trials)
                rng = np.random.default_rng(0)
                for k in range(orders):
                    order = None if k == 0 else rng.permutation(len(trials))
                    r = replay(trials, grace, rf, max_t, slots, order)
                    ratios.append(r["trial_epochs"] / fifo_epochs)
                    gaps.append(100 * (fifo_best - r["best_val_acc"]))
                    found.append(r["found_best"])
            rows.append({"grace": grace, "rf": rf, "epochs_ratio": float(np.mean(ratios)),
                         "gap_points": float(np.mean(gaps)), "found_best": float(np.mean(found))})  # fmt: skip
    return rows


def print_grid(rows) -> None:
    print(f"{'grace':>6}{'rf':>4}{'trial-epochs / FIFO':>21}{'best val_acc below FIFO (points)':>34}"
          f"{'FIFO best survives':>20}")  # fmt: skip
    for r in rows:
        print(f"{r['grace']:>6}{r['rf']:>4}{r['epochs_ratio']:>21.3f}{r['gap_points']:>34.2f}{r['found_best']:>20.0%}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("experiments", nargs="+", help="FIFO experiment folders (every trial ran every epoch)")
    p.add_argument("--grace", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--rf", type=float, nargs="+", default=[2, 3, 4])
    p.add_argument("--slots", type=int, default=2, help="concurrent trials (the FIFO run's)")
    p.add_argument("--orders", type=int, default=50, help="start orders per run: the recorded one, then random")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    rows = grid(a.experiments, a.grace, [int(r) if r == int(r) else r for r in a.rf], a.slots, a.orders)
    print_grid(rows)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
