"""The GPU code paths without a GPU: only torch's C entry points (torch._C._cuda_*, the device properties the C
layer hands torch.cuda) and TensorFlow's physical-device list are faked, so torch's and TF's own Python-level
argument checks (_get_device_index, fraction checks, "Unrecognized device", memory-limit checks) run for real.

What needs a real GPU (kernels, real memory, speed) is bench/gpu_check.py's job; see docs/gpu.md.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch
from sample_data import ROOT

from trainables import metric_names as M
from trainables.gpu_share import CONTEXT_RESERVE_BYTES, GPUUnavailableError, memory_cap
from trainables.torch_device import choose_precision, setup_device

GiB = 2**30
# The fields torch.cuda reads from the C layer's _CudaDeviceProperties (is_bf16_supported reads .major).
Props = namedtuple("Props", "name major minor total_memory multi_processor_count")
T4 = Props("Tesla T4", 7, 5, 15 * GiB, 40)
V100 = Props("Tesla V100-SXM2-16GB", 7, 0, 16 * GiB, 80)
A10G = Props("NVIDIA A10G", 8, 6, 24 * GiB, 80)


@pytest.fixture()
def fake_cuda(monkeypatch):
    """A CUDA build of torch with `count` GPUs of `props`, faked at torch._C; returns the calls the C layer got.
    torch.cuda's module state (initialised flag, cached count, queued lazy calls) is restored afterwards."""
    calls = SimpleNamespace(memory_fraction=[], set_device=[])

    def install(props: Props = T4, count: int = 1) -> SimpleNamespace:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(str(i) for i in range(count)) or "")
        monkeypatch.setattr(torch._C, "_cuda_getDeviceCount", lambda: count)
        monkeypatch.setattr(torch._C, "_cuda_init", lambda: None)
        monkeypatch.setattr(torch._C, "_cuda_getDevice", lambda: 0)
        monkeypatch.setattr(torch._C, "_cuda_setDevice", calls.set_device.append)
        monkeypatch.setattr(torch._C, "_cuda_setMemoryFraction", lambda f, i: calls.memory_fraction.append((f, i)))
        # torch._C's _cuda_init defines this in torch.cuda (torch/cuda/__init__.py get_device_properties)
        monkeypatch.setattr(torch.cuda, "_get_device_properties", lambda i: props, raising=False)
        monkeypatch.setattr(torch.cuda, "_initialized", False)
        monkeypatch.setattr(torch.cuda, "_cached_device_count", None)
        monkeypatch.setattr(torch.cuda, "_queued_calls", [])
        # seeds queued before a (fake) init are replayed by _lazy_init: start each test with none queued
        tracker = torch.cuda._lazy_seed_tracker
        for field in ("manual_seed_all_cb", "manual_seed_cb"):
            monkeypatch.setattr(tracker, field, None)
        monkeypatch.setattr(tracker, "call_order", [])
        return calls

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    threads = torch.get_num_threads()
    yield install
    torch.set_num_threads(threads)


def test_the_call_that_crashed_is_refused_by_torch_itself(fake_cuda):
    """torch 2.14.1 resolves the device with _get_device_index(device, optional=False): no index, no cap."""
    fake_cuda()
    with pytest.raises(ValueError, match="with a specified index"):
        torch.cuda.set_per_process_memory_fraction(0.25, torch.device("cuda"))


def test_fractional_gpu_caps_memory_on_the_indexed_device_leaving_the_context_room(fake_cuda):
    calls = fake_cuda(T4)
    dev = setup_device(cpus=2, gpu_fraction=0.25)
    assert dev == torch.device("cuda", 0) and torch.get_num_threads() == 2
    expected = 0.25 - CONTEXT_RESERVE_BYTES / T4.total_memory
    assert calls.memory_fraction == [(pytest.approx(expected), 0)] and calls.set_device == [0]
    assert torch.backends.cudnn.benchmark


def test_whole_gpu_is_not_capped_and_the_trials_gpu_is_index_0_of_its_visible_devices(fake_cuda, monkeypatch):
    calls = fake_cuda(A10G)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # Ray gave this trial physical GPU 3: torch calls it cuda:0
    assert setup_device(cpus=1, gpu_fraction=1.0) == torch.device("cuda", 0)
    assert calls.memory_fraction == []
    assert setup_device(cpus=1, gpu_fraction=0.5, device="cuda") == torch.device("cuda", 0)  # report.py's name
    assert calls.memory_fraction == [(pytest.approx(0.5 - CONTEXT_RESERVE_BYTES / A10G.total_memory), 0)]


def test_memory_cap_arithmetic():
    assert memory_cap(0.25, 16 * GiB) == pytest.approx(0.25 - 0.5 / 16)
    assert memory_cap(0.25, 2 * GiB) == pytest.approx(0.125)  # small GPU: never below half the share
    assert isinstance(memory_cap(0.5, 24 * GiB), float)  # torch refuses anything but a float


@pytest.mark.parametrize(
    ("props", "precision", "scaled"), [(T4, "fp16", True), (V100, "fp16", True), (A10G, "bf16", False)]
)
def test_precision_follows_the_gpu_generation(fake_cuda, props, precision, scaled):
    """torch.cuda.is_bf16_supported(including_emulation=False) reads the device's compute capability."""
    fake_cuda(props)
    dev = setup_device(cpus=1, gpu_fraction=0.5)
    p = choose_precision(dev)
    assert p.name == precision
    scaler = p.grad_scaler()
    assert scaler.is_enabled() is scaled  # fp16 needs loss scaling; bf16 has fp32's range
    with p.autocast():
        assert torch.is_autocast_enabled("cuda")
        assert torch.get_autocast_dtype("cuda") == {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def test_gpu_share_without_a_usable_gpu_fails_in_one_line(fake_cuda, monkeypatch):
    fake_cuda(T4, count=0)  # a CUDA build, no device visible
    with pytest.raises(GPUUnavailableError) as e:
        setup_device(cpus=1, gpu_fraction=0.25)
    line = str(e.value)
    assert "\n" not in line and "0.25 GPU" in line and "nvidia-smi" in line and "--gpus-per-trial 0" in line
    monkeypatch.delattr(torch._C, "_cuda_getDeviceCount")  # a CPU-only build of torch (torch.cuda._is_compiled)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(GPUUnavailableError, match="CPU-only build.*requirements-gpu.txt"):
        setup_device(cpus=1, gpu_fraction=0.5)
    assert setup_device(cpus=1, gpu_fraction=0.25, device="cpu") == torch.device("cpu")  # --train-on-cpu's way


# ---------------------------------------------------------------------------------------------------------------
# fp16 loop mechanics, on the CPU (autocast fp16 and GradScaler run there too): the scaler is in the checkpoint


LENET = dict(model="lenet5", lr=3e-3, batch_size=16, max_epochs=2, optimizer="adam", schedule="cosine",
             flip=True, crop_padding=2, cutout=0, dropout=0.0, label_smoothing=0.0, seed=0)  # fmt: skip


def test_fp16_training_records_precision_and_checkpoints_the_grad_scaler(tiny_arrays):
    from trainables.torch_loop import fit

    cpu = torch.device("cpu")
    reports, states = [], []
    fit({**LENET, "precision": "fp16"}, tiny_arrays, lambda r, s: (reports.append(r), states.append(copy.deepcopy(s))),
        device=cpu)  # fmt: skip
    assert [r[M.PRECISION] for r in reports] == ["fp16", "fp16"] and set(reports[0]) == set(M.REPORT_KEYS)
    assert states[0]["scaler"]["scale"] > 1  # an enabled scaler's state
    resumed = copy.deepcopy(states[0])
    resumed["scaler"]["scale"] = 1024.0  # a scale the run never had: the resumed scaler must start from it
    after = []
    fit({**LENET, "precision": "fp16"}, tiny_arrays, lambda r, s: after.append(copy.deepcopy(s)), device=cpu,
        checkpoint=resumed)  # fmt: skip
    assert after[0]["epoch"] == 2 and after[0]["scaler"]["scale"] == 1024.0
    plain = []
    fit({**LENET, "precision": "fp32"}, tiny_arrays, lambda r, s: plain.append((r, s)), device=cpu, max_epochs=1)
    assert plain[0][0][M.PRECISION] == "fp32" and plain[0][1]["scaler"] == {}  # disabled scaler: no state
    # a checkpoint from a bf16 GPU (or CPU) resumed on an fp16 one: nothing to restore (torch refuses an empty dict)
    moved = []
    fit({**LENET, "precision": "fp16"}, tiny_arrays, lambda r, s: moved.append(r), device=cpu, checkpoint=plain[0][1])
    assert [r[M.EPOCH] for r in moved] == [2]


def test_eval_batch_is_the_training_batch_on_a_gpu():
    from trainables.torch_loop import CPU_EVAL_BATCH, eval_batch_size

    assert eval_batch_size(torch.device("cuda", 0), 256) == 256
    assert eval_batch_size(torch.device("cpu"), 64) == CPU_EVAL_BATCH


def test_max_steps_limits_the_epoch(tiny_arrays):
    from trainables.torch_loop import fit

    states = []
    fit(LENET, tiny_arrays, lambda r, s: states.append(s), device=torch.device("cpu"), max_epochs=1, max_steps=2)
    assert int(states[0]["optimizer"]["state"][0]["step"]) == 2  # Adam's step count: 2 batches, not the epoch's 3


def test_lr_finder_uses_the_trials_precision(tiny_arrays):
    from trainables.lr_finder import lr_range_test

    with pytest.MonkeyPatch.context() as mp:
        seen = {}
        import torch_lr_finder

        real = torch_lr_finder.LRFinder.__init__

        def spy(self, *a, **kw):
            seen.update(kw)
            real(self, *a, **kw)

        mp.setattr(torch_lr_finder.LRFinder, "__init__", spy)
        lr_range_test({**LENET, "precision": "fp16"}, tiny_arrays, device=torch.device("cpu"), num_iter=15)
    assert seen["amp_config"] == {"device_type": "cpu", "dtype": torch.float16}
    assert seen["grad_scaler"].is_enabled()


# ---------------------------------------------------------------------------------------------------------------
# portable artifacts


def test_model_pth_holds_cpu_tensors_and_the_load_note_loads_a_gpu_written_file(tmp_path, monkeypatch):
    from analysis.retrain import local_framework
    from trainables.models import build_model

    fw = local_framework("torch", "cpu")
    model = build_model("lenet5", 3, dropout=0.0)
    name = fw.save_model(model, tmp_path)
    saved = torch.load(tmp_path / name, weights_only=True)
    assert all(t.device.type == "cpu" for t in saved.values())
    # What a GPU machine's torch.save writes: storages tagged "cuda:0" (torch/serialization.py location_tag).
    with monkeypatch.context() as mp:
        mp.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(model.state_dict(), tmp_path / "gpu.pth")
    with pytest.raises(RuntimeError, match="CUDA device"):  # the old note's load, on this CPU-only machine
        torch.load(tmp_path / "gpu.pth", weights_only=True)
    note = fw.load_note({"model": "lenet5", "dropout": 0.0}, 3)
    code = note.split("```python\n")[1].split("```")[0].replace("model.pth", str(tmp_path / "gpu.pth"))
    sys.path.insert(0, str(ROOT))
    scope = {}
    exec(code, scope)  # the note as a user runs it
    torch.testing.assert_close(scope["model"].state_dict(), model.state_dict())


# ---------------------------------------------------------------------------------------------------------------
# TensorFlow: a fresh process whose physical-device list (pywrap_tfe, TF's C layer) holds a GPU


TF_SCENARIOS = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import trainables.keras_loop as kt  # first: keras_env loads triton before TF (tensorflow#124205)
from trainables.gpu_share import GPUUnavailableError
from tensorflow.python import pywrap_tfe
from tensorflow.python.eager import context
from tensorflow.python.platform import build_info

# 1. a model built under mixed_float16 (as on a GPU), saved, loaded where the policy is float32 (a CPU machine)
import numpy as np
from trainables.keras_loop import MIXED_POLICY, save_model
from trainables.models.keras_resnet import keras_resnet18
kt.keras.mixed_precision.set_global_policy(MIXED_POLICY)
path = save_model(keras_resnet18((16, 16, 3), num_classes=3, stem="imagenet"), sys.argv[2])
kt.keras.mixed_precision.set_global_policy("float32")
probs = np.asarray(kt.keras.saving.load_model(path).predict(np.zeros((2, 16, 16, 3), "float32"), verbose=0))
loaded = [str(probs.dtype), list(probs.shape), round(float(probs.sum()), 3)]

# 2. setup_tensorflow with a GPU in the physical-device list
devices = [b"/physical_device:CPU:0", b"/physical_device:GPU:0"]
pywrap_tfe.TF_ListPhysicalDevices = lambda: list(devices)
pywrap_tfe.TF_ListPluggablePhysicalDevices = lambda: []
build_info.build_info["is_cuda_build"] = True  # what tensorflow[and-cuda] reports
kt.gpu_total_memory_mb = lambda index=0: 16000  # nvidia-smi's answer

def state():
    ctx = context.context()
    gpu = [d for d in ctx._physical_devices if d.device_type == "GPU"]
    return {
        "limits": [c.memory_limit for c in ctx._virtual_device_map.get(gpu[0], [])] if gpu else [],
        "growth": [ctx._memory_growth_map.get(d) for d in gpu],
        "visible_gpus": [d.name for d in ctx._visible_device_list if d.device_type == "GPU"],
        "threads": [ctx.intra_op_parallelism_threads, ctx.inter_op_parallelism_threads],
        "policy": kt.keras.mixed_precision.global_policy().name,
    }

out = {"loaded": loaded}
for name, cpus, share in [("quarter", 2, 0.25), ("whole", 1, 1.0), ("cpu_trial", 1, 0.0)]:
    context._reset_context()
    out[name] = {"device": kt.setup_tensorflow(cpus=cpus, gpu_fraction=share), **state()}
devices[:] = [b"/physical_device:CPU:0"]
for name, cuda in [("no_gpu", True), ("cpu_build", False)]:
    context._reset_context()
    build_info.build_info["is_cuda_build"] = cuda
    try:
        kt.setup_tensorflow(cpus=1, gpu_fraction=0.5)
        out[name] = "no error"
    except GPUUnavailableError as e:
        out[name] = str(e)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_tensorflow_gpu_share_through_tfs_own_device_checks_and_a_mixed_precision_model_loads_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, "-c", TF_SCENARIOS, str(ROOT), str(tmp_path)], capture_output=True,
                          text=True, timeout=240, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == ["float32", [2, 3], 2.0]  # failed before Block kept its dtype policy
    reserve_mib = CONTEXT_RESERVE_BYTES // 2**20
    quarter = out["quarter"]
    assert quarter["device"] == "gpu" and quarter["limits"] == [int(16000 * (0.25 - reserve_mib / 16000))]
    assert quarter["threads"] == [2, 2] and quarter["policy"] == "mixed_float16"
    assert out["whole"]["growth"] == [True] and out["whole"]["limits"] == []
    assert out["cpu_trial"]["device"] == "cpu" and out["cpu_trial"]["visible_gpus"] == []
    assert out["cpu_trial"]["policy"] == "float32"
    assert "lists no GPU" in out["no_gpu"] and "nvidia-smi" in out["no_gpu"]
    assert "tensorflow-cpu" in out["cpu_build"] and "requirements-gpu.txt" in out["cpu_build"]
    assert all("\n" not in out[k] for k in ("no_gpu", "cpu_build"))
