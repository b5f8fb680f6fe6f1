"""`--gpus-per-trial auto`: measure a trial's GPU memory before the search, then pack as many trials per GPU as fit.

    python run_search.py --model resnet18_pretrained --data-dir DIR --gpus-per-trial auto

On a GPU (a Ray task holding one whole GPU: the driver's machine, or a GPU node of the cluster) the most
memory-hungry config the search space allows (largest batch size and resolution, every wide variant: stem,
optimizer) runs a few training steps and a full evaluation through the trial's own `fit` on data of the search's
real size (the trial keeps its images on the GPU). The peak the allocator reserved plus the measured CUDA context,
with HEADROOM on top, decides the packing: the largest k in 1..MAX_TRIALS_PER_GPU with k x need <= GPU memory;
each trial then asks Ray for 1/k GPU and caps its allocator below that (trainables/gpu_share.py). Torch models only
(the Keras loop lets TF grow into a logical-device limit; give a number for it).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

HEADROOM = 0.15  # on top of the measured peak: allocator fragmentation, cuDNN picking other kernels on other data
MAX_TRIALS_PER_GPU = 8  # beyond this, trials fight over the GPU's compute and CPU feeding, not memory
PROBE_STEPS = 3  # training steps measured: the first allocates the optimizer state, the second holds it at peak
MAX_KEYS = ("batch_size", "resolution")  # memory grows with both: take the largest value the space allows
VARIANT_KEYS = ("stem", "optimizer")  # memory differs by choice in ways not worth predicting: measure each


class PackingError(Exception):
    """One line for the CLI: what could not be measured or packed, and what to do."""


@dataclass
class Packing:
    trials_per_gpu: int
    gpu_fraction: float  # what each trial asks Ray for
    need_bytes: int  # per trial: (peak + context) x (1 + headroom)


def choose_packing(
    peak_bytes: int,
    context_bytes: int,
    total_bytes: int,
    headroom: float = HEADROOM,
    max_per_gpu: int = MAX_TRIALS_PER_GPU,
) -> Packing:
    """The largest number of trials k (1..max_per_gpu) whose needs fit the GPU: k x (peak + context) x (1 +
    headroom) <= total. The fraction 1/k is rounded down to Ray's 1e-4 GPU granularity, so k of them fit."""
    need = int(math.ceil((peak_bytes + context_bytes) * (1 + headroom)))
    k = min(max_per_gpu, total_bytes // need) if need > 0 else max_per_gpu
    if k < 1:
        raise PackingError(
            f"one trial needs {gib(need)} (peak {gib(peak_bytes)} + context {gib(context_bytes)} + "
            f"{headroom:.0%}), more than the GPU's {gib(total_bytes)}; lower the space's largest batch_size/resolution"
        )
    return Packing(int(k), math.floor(10_000 / k) / 10_000, need)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def hungriest_configs(space: dict, defaults: dict, constants: dict) -> list[dict]:
    """Configs of the space's largest memory footprint: DEFAULTS with the largest batch_size/resolution allowed,
    the backbone trainable from the first step (freeze_epochs 0), and one config per combination of the variant
    keys' choices."""
    from ray.tune.search.sample import Categorical, Domain

    base = {k: v for k, v in space.items() if not isinstance(v, Domain)} | defaults | constants
    variants = {}
    for key, dom in space.items():
        if not isinstance(dom, Domain):
            continue
        if key in MAX_KEYS and isinstance(dom, Categorical):
            base[key] = max(dom.categories)
        elif key in MAX_KEYS:
            base[key] = dom.upper
        elif key in VARIANT_KEYS and isinstance(dom, Categorical):
            variants[key] = list(dom.categories)
    if "freeze_epochs" in base:
        base["freeze_epochs"] = 0
    combos = itertools.product(*variants.values()) if variants else [()]
    return [{**base, **dict(zip(variants, combo, strict=True))} for combo in combos]


def run_probe(config: dict, data: dict, device, *, steps: int = PROBE_STEPS, epochs: int = 1):
    """The trial's own `fit` for `epochs` epochs of `steps` batches, each followed by the full evaluation: the same
    model, data on the device, optimizer, precision and eval batch as a trial. (model, reports)."""
    from trainables.torch_loop import fit

    reports = []
    model = fit({**config, "max_epochs": epochs}, data, lambda r, s: reports.append(r), device=device, max_steps=steps)
    return model, reports


def measure(config: dict, data: dict, *, steps: int = PROBE_STEPS, epochs: int = 1) -> dict:
    """Train `config` for `steps` batches per epoch and evaluate the validation split, through the trial's `fit`,
    on this process's GPU (cuda:0); return the memory it took and the training throughput of the last epoch.

    peak_reserved: what the caching allocator held at most (what a trial's memory cap limits); peak_allocated:
    live tensors at most; context: memory the process holds on the GPU outside the allocator (the CUDA context and
    libraries), as the device reports it: total - free - reserved, on a GPU this task holds alone."""
    import torch

    from trainables.torch_device import setup_device

    device = setup_device(cpus=1, gpu_fraction=1.0)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    model, reports = run_probe(config, data, device, steps=steps, epochs=epochs)
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    result = {
        "peak_reserved": int(torch.cuda.max_memory_reserved(device)),
        "peak_allocated": int(torch.cuda.max_memory_allocated(device)),
        "context": int(max(0, total - free - torch.cuda.memory_reserved(device))),
        "total": int(total),
        "gpu": torch.cuda.get_device_name(device),
        "precision": reports[-1]["precision"],
        "images_per_s": reports[-1]["images_per_s"],
    }
    del model
    torch.cuda.empty_cache()
    return result


def measure_space(space: dict, defaults: dict, constants: dict, data: dict) -> dict:
    """`measure` every hungriest config; the one with the largest peak, with its config's memory keys."""
    worst = None
    for config in hungriest_configs(space, defaults, constants):
        m = measure(config, data)
        m["config"] = {k: config[k] for k in (*MAX_KEYS, *VARIANT_KEYS) if k in config}
        if worst is None or m["peak_reserved"] + m["context"] > worst["peak_reserved"] + worst["context"]:
            worst = m
    return worst


def probe_usable_gpu(framework: str, share: float) -> str | None:
    """In a process holding a GPU: None if `framework` can use it, else the one-line GPUUnavailableError message."""
    from trainables.framework import get_framework
    from trainables.gpu_share import GPUUnavailableError

    try:
        get_framework(framework).require_gpu(share)
    except GPUUnavailableError as e:
        return str(e)
    return None


def _remote(fn, gpus: float):
    """`fn` as a Ray task on a GPU node (max_calls=1: the worker exits after, releasing its CUDA context)."""
    import ray

    return ray.remote(num_cpus=1, num_gpus=gpus, max_calls=1)(fn)


def check_gpu_usable(framework: str, gpus_per_trial: float) -> None:
    """Before the search: one task holding a trial's GPU share checks that `framework` can use the GPU there
    (a CPU-only torch, or tensorflow-cpu, on GPU nodes would otherwise fail every trial and every retry)."""
    import ray

    share = min(gpus_per_trial, 1.0)
    message = ray.get(_remote(probe_usable_gpu, share).remote(framework, share))
    if message:
        raise PackingError(message.replace("this trial holds", "a probe task on a GPU node held", 1))


def auto_packing(space: dict, defaults: dict, constants: dict, data: dict) -> dict:
    """Measure on a GPU of the cluster (one Ray task holding a whole GPU) and choose the packing. Returns what
    experiment.json records: the measurement, the packing, the headroom."""
    import ray

    data_ref = ray.put(data)
    task = _remote(lambda d: measure_space(space, defaults, constants, d), 1)
    m = ray.get(task.remote(data_ref))
    packing = choose_packing(m["peak_reserved"], max(m["context"], _reserve()), m["total"])
    return {"measured": m, "headroom": HEADROOM, **asdict(packing)}


def _reserve() -> int:
    from trainables.gpu_share import CONTEXT_RESERVE_BYTES

    return CONTEXT_RESERVE_BYTES


def describe(info: dict) -> str:
    """Two lines for the console (each within 120 columns): what was measured, what was chosen."""
    m = info["measured"]
    keys = ", ".join(f"{k} {v}" for k, v in m["config"].items())
    return (
        f"gpus-per-trial auto: {m['gpu']} ({gib(m['total'])}), largest config ({keys}, {m['precision']}):\n"
        f"  peak {gib(m['peak_reserved'])} + context {gib(m['context'])}, +{info['headroom']:.0%} headroom"
        f" -> {info['trials_per_gpu']} trials per GPU, {info['gpu_fraction']:g} GPU each"
    )
