"""What a trial holding a share of a GPU must respect, for torch and Keras alike (no framework import here)."""

from __future__ import annotations

# Memory a CUDA process holds outside its framework's allocator (the CUDA context, cuDNN/cuBLAS kernels loaded at
# first use). A trial's memory cap leaves this much of its share for it. A budget, not a measurement:
# `--gpus-per-trial auto` (search_driver/gpu_packing.py) measures the real context and packs with the larger one.
CONTEXT_RESERVE_BYTES = 512 * 2**20


class GPUUnavailableError(RuntimeError):
    """A trial holds a GPU share but its framework cannot use a GPU: the message is one line, cause and fix."""


def memory_cap(fraction: float, total_bytes: int, reserve_bytes: int = CONTEXT_RESERVE_BYTES) -> float:
    """The allocator's share of the GPU for a trial holding `fraction` of it: the share minus the CUDA context's
    reserve (the allocator's cap does not count the context, which lives in the same memory). Never below half the
    share, so a small GPU still gets a usable cap."""
    return float(max(fraction / 2, fraction - reserve_bytes / total_bytes))
