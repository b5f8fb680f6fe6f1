"""What an epoch costs, measured before the search with the trial's own training step (search_driver/plan.py
decides from it).

A Ray actor holding a trial's resources (a fresh worker process, set up by the trial's own `Framework.setup_trial`:
threads, GPU share, precision) runs the trial's `fit` for PROBE_EPOCHS epochs of PROBE_IMAGES training images
(PROBE_STEPS batches at least) from the start of the search's training split, validating PROBE_VAL_IMAGES images
after each: the first epoch warms up (oneDNN / cuDNN kernels, Keras tracing), the second is timed, and a timed epoch
shorter than PROBE_MIN_S is probed again on more images (a small model's epoch of 256 images is timer noise). Per
image, its training rate and validation rate, plus one checkpoint write, give the epoch on the search's real data.

1. Every probe runs on the layout with the most trials at once (one per core), on all of its actors together, one
   probe after another: each figure is what trials side by side see (each other, and the machine's other load), and
   no probe runs alone while another ran beside a neighbour (that made a class measured last 2x too cheap). One cost
   key at a time: every value of a key is probed with the keys before it at their cheapest value (batch size last,
   probed at its smallest: a probe times whole batches), and a class costs the last probe's epoch times the ratio of
   each of its values (costs taken as separable: 4 probes instead of 6 for stem x batch size, 7 instead of 15 for
   resolution x batch size).
2. Each other layout (fewer trials, more threads each) trains the cheapest class at its smallest batch size on all
   of its actors at once; every class is scaled by its ratio to the same probe on the widest layout.

The actors exit afterwards, taking their threads and framework state with them: nothing of the measurement stays in
the driver or in the processes trials run in. Only a small slice of the data goes to the object store (the search's
arrays go there once, for the trials).

A class whose second training batch already shows an epoch longer than `hopeless_s` stops there (an epoch of at
least that, a lower bound): no layout could bring it to a first rung, and it would cost seconds to time.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

PROBE_STEPS = 2  # training batches per probe epoch, at least
PROBE_IMAGES = 256  # training images per probe epoch, at least: small batches get more of them (fairer on a busy CPU)
PROBE_EPOCHS = 2  # the first warms up, the second is timed
PROBE_VAL_IMAGES = 256  # validation images, at least (an eighth of the training images of a longer probe)
PROBE_MIN_S = 1.0  # a timed epoch shorter than this (a small model) is probed again on more images: timer noise
PROBE_MAX_BYTES = 64 * 2**20  # the data the probes may use, at most
CHECKPOINT_COPIES = 2  # the trial writes its checkpoint, Tune copies it into the trial folder


class TooCostly(Exception):
    def __init__(self, epoch_s: float):
        super().__init__(f"an epoch takes at least {epoch_s:.0f} s")
        self.epoch_s = epoch_s


def probe_data(data: dict, batch_sizes: list[int]) -> dict:
    """The first images of the training and validation splits: the largest batch size's probe, and up to
    PROBE_MAX_BYTES for longer probes of small models."""
    image_bytes = data["x_train"][0].nbytes
    n = max(max(probe_images(b) for b in batch_sizes), PROBE_MAX_BYTES // image_bytes)
    v = max(PROBE_VAL_IMAGES, n // 8)
    return {
        **{k: val for k, val in data.items() if not k.startswith(("x_", "y_"))},
        "x_train": np.ascontiguousarray(data["x_train"][:n]),
        "y_train": np.ascontiguousarray(data["y_train"][:n]),
        "x_val": np.ascontiguousarray(data["x_val"][:v]),
        "y_val": np.ascontiguousarray(data["y_val"][:v]),
    }


def probe_images(batch_size: int) -> int:
    """Training images of a probe epoch: PROBE_STEPS batches, or more to reach PROBE_IMAGES."""
    return max(PROBE_STEPS, -(-PROBE_IMAGES // batch_size)) * batch_size


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
        self.data, self.gpu_fraction, self.device = data, gpu_fraction, device

    def set_threads(self, cpus: float) -> bool:
        """Train with `cpus` threads from now on; False where that needs a new process (TensorFlow fixes its thread
        pools at first use; torch changes them at any time)."""
        if self.fw.name != "torch":
            return False
        self.fw.setup_trial(cpus, self.gpu_fraction, self.device)
        return True

    def measure(self, config: dict, train_images: int, hopeless_s: float | None = None) -> dict:
        """The trial's `fit` on the probe data: seconds per training and per validation image of the timed epoch,
        the checkpoint write, the precision; {"at_least": epoch seconds} when the class is hopeless. A timed epoch
        shorter than PROBE_MIN_S is measured again on as many images as make it that long (if the data has them)."""
        bs = min(int(config["batch_size"]), len(self.data["x_train"]))
        m = self.probe(config, probe_images(bs), train_images, hopeless_s)
        have = len(self.data["x_train"]) // bs * bs
        if "at_least" not in m and m["timed_s"] < PROBE_MIN_S and m["images"] < have:
            want = int(PROBE_MIN_S / m["train_s_per_image"]) // bs * bs + bs
            m = self.probe(config, min(have, want), train_images, hopeless_s)
        return m

    def probe(self, config: dict, n: int, train_images: int, hopeless_s: float | None) -> dict:
        bs = min(int(config["batch_size"]), n)
        val = max(PROBE_VAL_IMAGES, n // 8)
        data = {
            **self.data,
            "x_train": self.data["x_train"][:n],
            "y_train": self.data["y_train"][:n],
            "x_val": self.data["x_val"][:val],
            "y_val": self.data["y_val"][:val],
        }
        batches_per_epoch = train_images // min(int(config["batch_size"]), train_images)
        stamps, reports, saves = [], [], []

        def progress(epoch: int, batch: int, batches: int) -> None:
            stamps.append((epoch, batch, time.perf_counter()))
            if hopeless_s and epoch == 1 and batch == 2:  # the second batch: kernels chosen, Keras traced
                # half the rate of that batch: a lower bound of the epoch even if it was still warming up
                at_least = (stamps[-1][2] - stamps[-2][2]) * batches_per_epoch / 2
                if at_least > hopeless_s:
                    raise TooCostly(at_least)

        def report(result: dict, state) -> None:
            if result["epoch"] == PROBE_EPOCHS:  # the timed epoch's checkpoint, as a trial writes one each epoch
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
            "images": (n // bs) * bs,
            "timed_s": train_s,
            "train_s_per_image": train_s / ((n // bs) * bs),
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
    anchor: tuple,
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
    tuples; `anchor`: the DEFAULTS' class; `base_config`: DEFAULTS over the space's constants; `show`: progress."""
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

    def together(team: list, key: tuple, limit: float | None) -> dict:
        """Class `key` trained by every actor of `team` at the same time: the slowest one's measurement (one that
        stopped early if any did), so what each of that many trials side by side sees."""
        ms = ray.get([a.measure.remote({**base_config, **dict(key)}, train_images, limit) for a in team])
        return max(ms, key=lambda m: float("inf") if "at_least" in m else cost(m, key))

    def cost(m: dict, key: tuple) -> float:
        return m["at_least"] if "at_least" in m else epoch_seconds(m, train_images, val_images, batch_size(key))

    # 1. Every probe on the layout with the most trials at once (one per core), on all of its actors together, one
    # probe after another: each figure is what trials side by side see (each other, and the machine's other load),
    # and no probe runs alone while another runs beside a neighbour. One cost key at a time, the others fixed (costs
    # taken as separable: a class costs the base probe's epoch times each of its values' ratio): every value of a
    # key is probed with the keys before it at their cheapest, batch size last at its smallest, from DEFAULTS' class.
    wide = max(layouts, key=lambda lay: lay[0])
    team = actors(wide[0], wide[1])
    names = [k for k, _ in classes[0]]
    values = {k: list(dict.fromkeys(dict(c)[k] for c in classes)) for k in names}
    varying = sorted((k for k in names if len(values[k]) > 1), key=lambda k: k == "batch_size")
    base = dict(anchor) | ({"batch_size": min(values["batch_size"])} if "batch_size" in varying else {})
    total = sum(len(values[k]) for k in varying) - max(0, len(varying) - 1) or 1
    results, ratio, stopped = {}, {}, set()

    def key_of(config: dict) -> tuple:
        return tuple((k, config[k]) for k in names)

    def probe_all(keys: list[tuple]) -> None:
        for key in keys:
            if key not in results:
                show(f"plan: measuring what an epoch costs, {len(results)}/{total} probes, {wide[0]} at once")
                results[key] = together(team, key, hopeless_s)

    try:
        probe_all([key_of(base)])
        for name in varying:
            probes = {v: key_of({**base, name: v}) for v in values[name]}
            probe_all(list(probes.values()))
            fine = [v for v in values[name] if "at_least" not in results[probes[v]]] or values[name]
            best = min(fine, key=lambda v: cost(results[probes[v]], probes[v]))
            ratio[name] = {
                v: cost(results[probes[v]], probes[v]) / cost(results[probes[best]], probes[best]) for v in values[name]
            }
            stopped |= {(name, v) for v in values[name] if "at_least" in results[probes[v]]}
            base[name] = best
        base_cost = cost(results[key_of(base)], key_of(base))
        per_trial = {c: base_cost * math.prod(ratio[k][v] for k, v in c if k in ratio) for c in classes}
        at_least = [c for c in classes if any(kv in stopped for kv in c)]
        cheapest = min([k for k in classes if k not in at_least] or classes, key=per_trial.get)
        # 2. Each other layout (fewer trials, more threads each), on the cheapest class at the smallest batch size
        # (the quickest probe) against the same probe on the widest layout: every class is scaled by that ratio.
        if "batch_size" in names:
            small = key_of({**dict(cheapest), "batch_size": min(values["batch_size"])})
            cheapest = small if small not in at_least else cheapest
        probe_all([cheapest])
        per_layout = {wide: cost(results[cheapest], cheapest)}
        for lay in layouts:  # the same processes where torch can re-thread
            if lay == wide:
                continue
            show(f"plan: measuring {lay[0]} trial(s) at once x {lay[1]:g} threads ({describe_class(cheapest)})")
            probes = team[: lay[0]]
            if len(probes) < lay[0] or not all(ray.get([a.set_threads.remote(lay[1]) for a in probes])):
                for a in team:
                    ray.kill(a)
                team = probes = actors(lay[0], lay[1])
            # stop once it is slower per trial than the widest layout: fewer trials and no faster, it loses on every
            # count (under load, extra threads can be many times slower)
            per_layout[lay] = cost(together(probes, cheapest, per_layout[wide]), cheapest)
    finally:
        for a in team:
            ray.kill(a)
    table = {lay: {k: v * per_layout[lay] / per_layout[wide] for k, v in per_trial.items()} for lay in layouts}
    precision = next((m["precision"] for m in results.values() if "precision" in m), "unknown")
    seconds = time.perf_counter() - start
    record = {
        "seconds": round(seconds, 1),
        "precision": precision,
        "probe": f"{PROBE_EPOCHS} epochs of {PROBE_IMAGES}+ images, {PROBE_VAL_IMAGES} validation images",
        "classes_measured_with": f"{wide[0]} trial(s) at once x {wide[1]:g} threads",
        "probes": {describe_class(k): round(cost(m, k), 2) for k, m in results.items()},
        "per_trial_epoch_s": {describe_class(k): round(v, 2) for k, v in per_trial.items()},
        "layout_epoch_s": {f"{k}x{c:g}": round(v, 2) for (k, c), v in per_layout.items()},
        "layouts_measured_on": dict(cheapest),
        "stopped_early": [dict(k) for k in at_least],
    }
    return Measured(table, at_least, precision, seconds, record)


def describe_class(key: tuple) -> str:
    """A cost class ((key, value), ...) in words: "stem imagenet, batch 128"."""
    return ", ".join(f"{'batch' if k == 'batch_size' else k} {v}" for k, v in key) or "every config"


def stderr_show(text: str) -> None:
    """A progress line: rewritten in place on a terminal, else nothing (the plan's lines say what was measured)."""
    if sys.stderr.isatty():
        print(f"\r{text[:119]:<119}", end="", file=sys.stderr, flush=True)
