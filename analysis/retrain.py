"""Retrain the best config keeping its best epoch by the search's metric and mode, through the framework seam
(trainables/framework.py): one keep-best rule for torch and Keras alike. (--no-retrain: analysis/evaluation.py.)"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from trainables import metric_names as M
from trainables.framework import Framework, get_framework


@dataclass
class Run:
    model: object
    history: list[dict]  # one report per epoch (the trainables' metric names)
    best_epoch: int  # epoch whose weights the model holds
    kept_value: float  # the search metric at that epoch (inf / -inf if no epoch reported a finite one; nan: refit)
    averaged: object = None  # the moving average of the weights at that epoch, BatchNorm recomputed (config ema_decay)
    trained_on: str = "train"  # "train": validated on the validation split; "train+val": a refit, not validated


def retrain(
    fw: Framework, config: dict, data: dict, epochs: int, on_epoch: Callable[[dict], None], *, metric: str, mode: str
) -> Run:
    """Train `config` for `epochs` and give back the weights of its best epoch by the search's own rule (`metric`
    and `mode` from experiment.json: analysis/trials.py picks the best trial by the same comparison).

    With no validation images (a refit on train + validation) no epoch can be judged: the last one is kept. With
    config "ema_decay" the run also carries the averaged model of the kept epoch (`fw.averaged_model`)."""
    validated = len(data["y_val"]) > 0
    averaging = bool(config.get("ema_decay"))
    kept = {"value": None, "epoch": 0, "weights": None, "averaged": None, "history": []}

    def report(result: dict, state) -> None:
        kept["history"].append(dict(result))
        if not validated or M.better(float(result[metric]), kept["value"], mode):
            kept.update(value=float(result[metric]), epoch=result[M.EPOCH], weights=fw.weights_of(state))
            kept["averaged"] = fw.averaged_weights_of(state) if averaging else None
        on_epoch(result)

    model = fw.fit(config, data, report, max_epochs=epochs)
    if kept["weights"] is not None:
        fw.set_weights(model, kept["weights"])
    averaged = fw.averaged_model(model, kept["averaged"], config, data) if kept["averaged"] is not None else None
    worst = math.inf if mode == "min" else -math.inf
    value = math.nan if not validated else worst if kept["value"] is None else kept["value"]
    return Run(model, kept["history"], kept["epoch"], value, averaged, "train" if validated else "train+val")


def local_framework(name: str, device: str | None = None, threads: int = 1) -> Framework:
    """Framework `name` set up in this process: `device` or the GPU when there is one; `threads` CPU threads of the
    retrain (torch intra-op / TF intra- and inter-op)."""
    fw = get_framework(name)
    fw.setup_local(device, threads)
    return fw


def default_threads(busy: float | None = None) -> int:
    """The cores the other runnable threads (`busy`, default: `busy_cores()`) leave free, at least 1. Oversubscribed cores are what hurts: on 2 busy
    cores (1-min load 2.8-12) LeNet-5 epochs ran 4.5-23x slower with 2 threads than with 1 (bench/threads.py,
    docs/first-run.md)."""
    cores = os.cpu_count() or 1
    busy = busy_cores() if busy is None else busy
    return max(1, min(cores, int(cores - busy + 0.5)))


def busy_cores(samples: int = 10, interval: float = 0.05) -> float:
    """Runnable threads other than this one, now: the mean of /proc/stat's procs_running over half a second (Linux),
    else the 1-minute load average. The load average still remembers the search that ended a minute ago (the
    README's two commands run back to back), and would give a report on a now idle machine one thread of two."""
    counts = []
    for k in range(samples):
        try:
            with open("/proc/stat") as f:
                counts += [int(line.split()[1]) for line in f if line.startswith("procs_running")]
        except (OSError, ValueError, IndexError):
            return os.getloadavg()[0]
        if k + 1 < samples:
            time.sleep(interval)
    return max(0.0, sum(counts) / len(counts) - 1) if counts else os.getloadavg()[0]  # - 1: this thread
