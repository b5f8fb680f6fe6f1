"""Retrain the best config keeping its best epoch by the search's metric and mode, through the framework seam
(trainables/framework.py): one keep-best rule for torch and Keras alike. (--no-retrain: analysis/evaluation.py.)"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from trainables import metric_names as M
from trainables.framework import Framework, get_framework


@dataclass
class Run:
    model: object
    history: list[dict]  # one report per epoch (the trainables' metric names)
    best_epoch: int  # epoch whose weights the model holds
    kept_value: float  # the search metric at that epoch (inf / -inf if no epoch reported a finite one)


def retrain(
    fw: Framework, config: dict, data: dict, epochs: int, on_epoch: Callable[[dict], None], *, metric: str, mode: str
) -> Run:
    """Train `config` for `epochs` and give back the weights of its best epoch by the search's own rule (`metric`
    and `mode` from experiment.json: analysis/trials.py picks the best trial by the same comparison)."""
    kept = {"value": None, "epoch": 0, "weights": None, "history": []}

    def report(result: dict, state) -> None:
        kept["history"].append(dict(result))
        if M.better(float(result[metric]), kept["value"], mode):
            kept.update(value=float(result[metric]), epoch=result[M.EPOCH], weights=fw.weights_of(state))
        on_epoch(result)

    model = fw.fit(config, data, report, max_epochs=epochs)
    if kept["weights"] is not None:
        fw.set_weights(model, kept["weights"])
    worst = math.inf if mode == "min" else -math.inf
    return Run(model, kept["history"], kept["epoch"], worst if kept["value"] is None else kept["value"])


def local_framework(name: str, device: str | None = None, threads: int = 1) -> Framework:
    """Framework `name` set up in this process: `device` or the GPU when there is one; `threads` CPU threads of the
    retrain (torch intra-op / TF intra- and inter-op)."""
    fw = get_framework(name)
    fw.setup_local(device, threads)
    return fw


def default_threads() -> int:
    """The cores the 1-minute load average leaves free, at least 1. Oversubscribed cores are what hurts: on 2 busy
    cores (1-min load 2.8-12) LeNet-5 epochs ran 4.5-23x slower with 2 threads than with 1 (bench/threads.py,
    docs/first-run.md)."""
    cores = os.cpu_count() or 1
    return max(1, min(cores, int(cores - os.getloadavg()[0] + 0.5)))
