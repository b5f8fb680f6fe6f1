"""A torch trial's device and precision: the GPU Ray gave it (with its index), its memory cap, and the autocast
dtype its hardware runs natively (a GPU's generation, a CPU's instruction set). No silent CPU fallback: a trial
holding a GPU share that finds no usable CUDA GPU fails at once with one line naming the cause and the fix.

Every torch.cuda call here goes through torch's own argument checks (tests/test_gpu.py fakes only torch._C):
- `set_per_process_memory_fraction(fraction: float, device)`: `device` must carry an index
  (torch/_utils.py `_get_device_index(..., optional=False)`), `fraction` a float in [0, 1] (torch/cuda/memory.py).
- `is_bf16_supported(including_emulation=False)`: True only for compute capability >= 8 (sm80+: A100, A10G, L4,
  H100); T4 (sm75) and V100 (sm70) get fp16 autocast with a GradScaler instead (no bf16 cuDNN convolutions there).
- `torch.cpu.get_capabilities()` (torch/cpu/__init__.py: `MappingProxyType(torch._C._cpu._get_cpu_capability())`,
  cached with lru_cache; cpuinfo's flags): a CPU with native bf16 (x86 AVX512-BF16 or AMX-BF16, ARM BF16 / SVE-BF16)
  trains under bf16 autocast; elsewhere bf16 would be emulated (slower than fp32), so fp32.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .gpu_share import GPUUnavailableError, memory_cap

PRECISIONS = ("bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
# cpuinfo's names (torch.cpu.get_capabilities) of the instructions that compute in bf16 natively
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


def require_cuda(gpu_fraction: float) -> None:
    """Raise GPUUnavailableError unless torch can use a CUDA GPU (a trial given `gpu_fraction` > 0 needs one)."""
    if torch.cuda.is_available():
        return
    if torch.version.cuda is None:
        cause = f"torch {torch.__version__} is a CPU-only build"
        fix = "install the CUDA build on GPU nodes: pip install -r requirements-gpu.txt"
    else:
        cause = f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU (no driver, or none visible)"
        fix = "check nvidia-smi and CUDA_VISIBLE_DEVICES on the node"
    raise GPUUnavailableError(
        f"this trial holds {gpu_fraction:g} GPU but {cause}; {fix}, or run with --gpus-per-trial 0"
    )


def setup_device(cpus: float = 1, gpu_fraction: float = 0.0, device: str | None = None) -> torch.device:
    """Threads = the trial's CPUs; with a GPU share, the trial's GPU (Ray sets CUDA_VISIBLE_DEVICES to the GPUs it
    assigned, so the trial's GPU is index 0) with this process's memory capped at its share (Ray does not isolate
    GPU memory). `device` ("cpu", "cuda", "cuda:1") overrides the choice."""
    torch.set_num_threads(max(1, int(cpus)))
    if device is None:
        if gpu_fraction > 0:
            require_cuda(gpu_fraction)
        device = "cuda" if gpu_fraction > 0 else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        require_cuda(gpu_fraction or 1)
        if dev.index is None:
            dev = torch.device("cuda", 0)
        torch.cuda.set_device(dev)  # is_bf16_supported and the autocast kernels read the current device
        if 0 < gpu_fraction < 1:
            total = torch.cuda.get_device_properties(dev).total_memory
            torch.cuda.set_per_process_memory_fraction(memory_cap(gpu_fraction, total), dev)
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
    return dev


@dataclass(frozen=True)
class Precision:
    """Autocast dtype, loss scaling and memory format of a device: "bf16" (sm80+ GPUs and CPUs with native bf16, no
    scaling), "fp16" (older GPUs, GradScaler), "fp32" (other CPUs: no autocast)."""

    name: str
    device_type: str

    @property
    def channels_last(self) -> bool:
        """NHWC models and batches: cuDNN's fast layout on a GPU, and oneDNN's for bf16 convolutions on a CPU (faster
        there for LeNet5 and ResNet18: docs/measurements.md); fp32 on a CPU keeps NCHW."""
        return self.device_type == "cuda" or self.name == "bf16"

    def autocast(self):
        dtype = DTYPES[self.name]
        return nullcontext() if dtype is None else torch.autocast(self.device_type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none (disabled scaler:
        scale/step/update pass through)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (cpuinfo's flags, through torch; see the module docstring)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # a torch without this probe: fp32
    if capabilities is None:
        return False
    flags = capabilities()
    return any(flags.get(name) is True for name in NATIVE_BF16_FLAGS)


def choose_precision(device: torch.device, override: str | None = None) -> Precision:
    """The precision a device trains in by hardware: bf16 where the GPU or CPU runs it natively, fp16 on older GPUs,
    fp32 on other CPUs. `override` ("bf16", "fp16", "fp32": a config's "precision", a trial's recorded one for its
    retrain) forces one, e.g. fp16 on CPU in tests."""
    if override is not None:
        if override not in PRECISIONS:
            raise ValueError(f"unknown precision {override!r}; known: {', '.join(PRECISIONS)}")
        return Precision(override, device.type)
    if device.type != "cuda":
        return Precision("bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32", device.type)
    native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    return Precision("bf16" if native_bf16 else "fp16", "cuda")
