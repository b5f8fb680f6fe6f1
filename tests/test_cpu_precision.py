"""CPU precision by hardware: bf16 autocast (and channels_last) only where the CPU computes in bf16 natively, fp32
elsewhere, recorded in every report as `precision`.

Faked: only torch's lowest CPU probe, `torch._C._cpu._get_cpu_capability` (cpuinfo's flags; torch/cpu/__init__.py
`get_capabilities` wraps it in a MappingProxyType behind an lru_cache, cleared here). `torch.cpu.get_capabilities`,
`choose_precision`, torch's autocast and the training loop run for real.
"""

from __future__ import annotations

import pytest
import torch
from sample_data import lenet_config

from trainables import metric_names as M
from trainables.torch_device import choose_precision, cpu_has_native_bf16

CPU = torch.device("cpu")
AVX512_ONLY = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bw": True, "avx512_bf16": False}
LENET = lenet_config(max_epochs=1)


@pytest.fixture()
def cpu_flags(monkeypatch):
    """Make torch's cpuinfo probe report `flags`; torch.cpu.get_capabilities' cache is cleared around it."""

    def install(flags: dict) -> None:
        monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: dict(flags))
        torch.cpu.get_capabilities.cache_clear()

    yield install
    torch.cpu.get_capabilities.cache_clear()  # the real flags again for later tests


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({**AVX512_ONLY, "avx512_bf16": True}, "bf16"),  # AMD Zen 4 / Intel Cooper Lake and later
        ({**AVX512_ONLY, "amx_bf16": True, "amx_tile": True}, "bf16"),  # Intel Sapphire Rapids (AMX)
        ({"architecture": "aarch64", "neon": True, "bf16": True}, "bf16"),  # ARMv8.6 (Graviton 3)
        (AVX512_ONLY, "fp32"),  # AVX-512 without BF16: torch would emulate bf16, slower than fp32
        ({"architecture": "x86_64", "avx2": True}, "fp32"),
        ({"architecture": "aarch64", "neon": True, "bf16": False}, "fp32"),
    ],
)
def test_bf16_only_where_the_cpu_reports_native_bf16(cpu_flags, flags, expected):
    cpu_flags(flags)
    assert cpu_has_native_bf16() is (expected == "bf16")
    p = choose_precision(CPU)
    assert p.name == expected and p.channels_last is (expected == "bf16")
    assert not p.grad_scaler().is_enabled()  # bf16 has fp32's range: no loss scaling
    with p.autocast():
        assert torch.is_autocast_enabled("cpu") is (expected == "bf16")
        if expected == "bf16":
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert choose_precision(CPU, "fp32").name == "fp32"  # the override (a trial's recorded precision) wins


@pytest.mark.parametrize(("flags", "expected"), [({**AVX512_ONLY, "avx512_bf16": True}, "bf16"), (AVX512_ONLY, "fp32")])
def test_a_cpu_trial_records_the_precision_its_hardware_chose(cpu_flags, tiny_arrays, flags, expected):
    from trainables.torch_loop import fit

    cpu_flags(flags)
    reports = []
    model = fit(LENET, tiny_arrays, lambda r, s: reports.append(r), device=CPU)
    assert [r[M.PRECISION] for r in reports] == [expected]
    conv = model[0].weight  # LeNet5's first conv: NHWC weights where bf16 trains in channels_last
    assert conv.is_contiguous(memory_format=torch.channels_last) is (expected == "bf16")
