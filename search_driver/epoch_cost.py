"""What an epoch costs, measured before the search with the trial's own training step (search_driver/plan.py
decides from it).

A Ray actor holding a trial's resources (a fresh worker process, set up by the trial's own `Framework.setup_trial`:
threads, GPU share, precision) runs the trial's `fit` for PROBE_EPOCHS epochs of PROBE_STEPS batches on the first
images of the search's training split, validating PROBE_VAL_IMAGES images after each: the first epoch warms up
(oneDNN / cuDNN kernels, Keras tracing), the second is timed. Per image, its training rate and validation rate, plus
one checkpoint write, give the epoch on the search's real data. The layout with the most trials at once (one per
core) measures every cost class, its actors side by side, so the figures include what concurrent trials do to each
other; each other layout (fewer trials, more threads each) measures the cheapest class the same way, and every class
is scaled by that ratio. The actors exit afterwards, taking their threads and framework state with them: nothing of
the measurement stays in the driver or in the processes trials run in. Only a small slice of the data is put in the
object store (the search's arrays go there once, for the trials).

A class whose second training batch already shows an epoch longer than `hopeless_s` stops there (an epoch of at
least that, a lower bound): no layout could bring it to a first rung, and it would cost seconds to time.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

PROBE_STEPS = 2  # training batches per probe epoch
PROBE_EPOCHS = 2  # the first warms up, the second is timed
PROBE_VAL_IMAGES = 512
CHECKPOINT_COPIES = 2  # the trial writes its checkpoint, Tune copies it into the trial folder


class TooCostly(Exception):
    def __init__(self, epoch_s: float):
        super().__init__(f"an epoch takes at least {epoch_s:.0f} s")
        self.epoch_s = epoch_s


def probe_data(data: dict, batch_sizes: list[int]) -> dict:
    """The first images of the training and validation splits: enough for PROBE_STEPS batches of the largest size."""
    n = PROBE_STEPS * max(batch_sizes)
    return {
        **{k: v for k, v in data.items() if not k.startswith(("x_", "y_"))},
        "x_train": np.ascontiguousarray(data["x_train"][:n]),
        "y_train": np.ascontiguousarray(data["y_train"][:n]),
        "x_val": np.ascontiguousarray(data["x_val"][:PROBE_VAL_IMAGES]),
        "y_val": np.ascontiguousarray(data["y_val"][:PROBE_VAL_IMAGES]),
    }


def epoch_seconds(m: dict, train_images: int, val_images: int, batch_size: int) -> float:
    """An epoch of the real data from one probe: full batches of training, the validation split, the checkpoint."""
    batches = train_images // min(batch_size, train_images)
    return (
        batches * min(batch_size, train_images) * m["train_s_per_image"]
        + val_images * m["val_s_per_image"]
        + CHECKPOINT_COPIES * m["checkpoint_s"]
    )


class CostProbe:
    """In a Ray actor holding one trial's resources: the trial's framework, set up as a trial's."""

    def __init__(self, framework: str, cpus: float, gpu_fraction: float, device: str | None, data: dict):
        from trainables.framework import get_framework

        self.fw = get_framework(framework)
        self.fw.setup_trial(cpus, gpu_fraction, device)
        self.data = data

    def measure(self, config: dict, train_images: int, hopeless_s: float | None = None) -> dict:
        """The trial's `fit` on the probe data: seconds per training and per validation image of the timed epoch,
        the checkpoint write, the precision; {"at_least": epoch seconds} when the class is hopeless."""
        bs = min(int(config["batch_size"]), len(self.data["x_train"]))
        n = PROBE_STEPS * bs
        data = {**self.data, "x_train": self.data["x_train"][:n], "y_train": self.data["y_train"][:n]}
        batches_per_epoch = train_images // min(int(config["batch_size"]), train_images)
        stamps, reports, saves = [], [], []

        def progress(epoch: int, batch: int, batches: int) -> None:
            stamps.append(time.perf_counter())
            if hopeless_s and epoch == 1 and batch == 2:  # the second batch: kernels chosen, Keras traced
                # half the rate of that batch: a lower bound of the epoch even if it was still warming up
                at_least = (stamps[-1] - stamps[-2]) * batches_per_epoch / 2
                if at_least > hopeless_s:
                    raise TooCostly(at_least)

        def report(result: dict, state) -> None:
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                self.fw.save_checkpoint(state, d)
                saves.append(time.perf_counter() - t)
            reports.append(result)

        try:
            self.fw.fit({**config, "max_epochs": PROBE_EPOCHS}, data, report, progress=progress)
        except TooCostly as e:
            return {"at_least": e.epoch_s}
        last = reports[-1]
        train_s = (n // bs) * bs / last["images_per_s"]
        return {
            "train_s_per_image": 1 / last["images_per_s"],
            "val_s_per_image": max(0.0, last["epoch_seconds"] - train_s) / len(data["x_val"]),
            "checkpoint_s": saves[-1],
            "precision": last["precision"],
        }


@dataclass
class Measured:
    epoch_s: dict  # layout -> cost class -> seconds per epoch of one trial (plan.py's table)
    at_least: list  # classes stopped early: their epoch_s is a lower bound
    precision: str
    seconds: float  # how long the measurement took
    record: dict  # for experiment.json


def measure(
    framework: str,
    classes: list[tuple],
    base_config: dict,
    data: dict,
    layouts: list[tuple[int, float]],
    *,
    gpu_fraction: float = 0.0,
    device: str | None = None,
    hopeless_s: float | None = None,
    show=print,
) -> Measured:
    """Epoch seconds per layout and cost class for the search's `data` (search_arrays()). `classes`: plan.class_key
    tuples; `base_config`: DEFAULTS over the space's constants; `show`: progress lines."""
    import ray

    start = time.perf_counter()
    train_images, val_images = len(data["y_train"]), len(data["y_val"])

    def batch_size(key: tuple) -> int:
        return int(dict(key).get("batch_size", base_config["batch_size"]))

    ref = ray.put(probe_data(data, [batch_size(c) for c in classes]))
    probe = ray.remote(CostProbe)

    def actors(n: int, cpus: float) -> list:
        opts = dict(num_cpus=cpus, num_gpus=gpu_fraction)
        return [probe.options(**opts).remote(framework, cpus, gpu_fraction, device, ref) for _ in range(n)]

    def cost(key: tuple, m: dict) -> float:
        return m["at_least"] if "at_least" in m else epoch_seconds(m, train_images, val_images, batch_size(key))

    # The most trials at once (one per core on a CPU) measure every class between them, at the same time, so each
    # figure includes what trials running side by side do to each other (and whatever else the machine runs).
    wide = max(layouts, key=lambda lay: lay[0])
    team = actors(min(wide[0], len(classes)), wide[1])
    calls = {}
    for i, key in enumerate(classes):
        calls[team[i % len(team)].measure.remote({**base_config, **dict(key)}, train_images, hopeless_s)] = key
    results, pending = {}, list(calls)
    try:
        while pending:
            show(
                f"plan: measuring what an epoch costs, {len(results)}/{len(classes)} configs done, {len(team)} at once"
            )
            done, pending = ray.wait(pending, num_returns=1)
            results[calls[done[0]]] = ray.get(done[0])
    finally:
        for a in team:
            ray.kill(a)
    at_least = [k for k in classes if "at_least" in results[k]]
    precision = next((results[k]["precision"] for k in classes if k not in at_least), "unknown")
    table = {wide: {k: cost(k, results[k]) for k in classes}}
    cheapest = min([k for k in classes if k not in at_least] or classes, key=table[wide].get)
    ratios = {}
    for lay in layouts:  # fewer trials with more threads each: the cheapest class, scaled to the others
        if lay == wide:
            continue
        show(f"plan: measuring {lay[0]} trial(s) at once x {lay[1]:g} threads ({_name(cheapest)})")
        team = actors(lay[0], lay[1])
        # slower per trial than the most-at-once layout: fewer trials and no faster, it loses on every count (the
        # probe stops as soon as that is clear: under load, extra threads can be many times slower)
        limit = table[wide][cheapest]
        try:
            ms = ray.get([a.measure.remote({**base_config, **dict(cheapest)}, train_images, limit) for a in team])
        finally:
            for a in team:
                ray.kill(a)
        ratio = max(cost(cheapest, m) for m in ms) / table[wide][cheapest]
        ratios[f"{lay[0]}x{lay[1]:g}"] = round(ratio, 3)
        table[lay] = {k: v * ratio for k, v in table[wide].items()}
    seconds = time.perf_counter() - start
    record = {
        "seconds": round(seconds, 1),
        "precision": precision,
        "probe": f"{PROBE_EPOCHS} epochs of {PROBE_STEPS} batches, {PROBE_VAL_IMAGES} validation images",
        "measured_with": f"{wide[0]} trial(s) at once x {wide[1]:g} threads",
        "layout_ratios": ratios,
        "ratios_from": dict(cheapest),
        "stopped_early": [dict(k) for k in at_least],
    }
    return Measured(table, at_least, precision, seconds, record)


def _name(key: tuple) -> str:
    from search_driver.plan import describe_class

    return describe_class(key)


def stderr_show(text: str) -> None:
    """A progress line: rewritten in place on a terminal, else nothing (the plan's lines say what was measured)."""
    if sys.stderr.isatty():
        print(f"\r{text[:119]:<119}", end="", file=sys.stderr, flush=True)
