"""bench/gpu_check.py on a bare CUDA machine (torch, torchvision, numpy, pillow only): run here with Ray, Optuna and
TensorFlow made unimportable (a sitecustomize on PYTHONPATH hides them from sys.path's finder), in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sample_data import ROOT

pytestmark = pytest.mark.slow  # fresh interpreters importing torch

BLOCKER = """
import importlib.machinery
import sys

BLOCKED = {"ray", "optuna", "tensorflow"}


class HidingPathFinder:
    # sys.path's finder, blind to BLOCKED: `import ray` fails and importlib.util.find_spec("ray") is None, exactly as
    # where it is not installed (torch._dynamo asks find_spec whether tensorflow is there)
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)

    @staticmethod
    def invalidate_caches():
        importlib.machinery.PathFinder.invalidate_caches()


sys.meta_path[:] = [HidingPathFinder if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
"""

# The torch rows' own path on the CPU: each torch model's first config (from its search space, without Ray) through
# the trial's fit for one step, as gpu_packing.measure runs it on a GPU; smaller batches and pixels to stay fast.
TORCH_PATH = """
import sys

import numpy as np
import torch

sys.path.insert(0, {root!r})
from bench import gpu_check
from search_driver.gpu_packing import run_probe

rng = np.random.default_rng(0)
data = {{"x_train": rng.integers(0, 256, (32, 3, 32, 32), dtype=np.uint8), "y_train": rng.integers(0, 10, 32),
        "x_val": rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8), "y_val": rng.integers(0, 10, 16),
        "classes": [str(i) for i in range(10)], "mean": [0.5] * 3, "std": [0.25] * 3}}
for model, overrides in gpu_check.CHECKS:
    if model.startswith("keras"):
        continue
    config = gpu_check.config_of(model, overrides)
    config = {{**config, "batch_size": 8, **({{"resolution": 32}} if "resolution" in config else {{}})}}
    _, reports = run_probe(config, data, torch.device("cpu"), steps=1)
    print(model, reports[-1]["precision"])
print("imported:", sorted({{m.split(".")[0] for m in sys.modules}} & {{"ray", "optuna", "tensorflow", "keras"}}))
"""


def bare(tmp_path) -> dict:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_gpu_check_needs_no_ray_optuna_or_tensorflow(tmp_path):
    env = bare(tmp_path)
    for module in ("ray", "optuna", "tensorflow"):  # the blocker works
        proc = run(["-c", f"import {module}"], env)
        assert proc.returncode == 1 and f"No module named '{module}'" in proc.stderr
    proc = run(["bench/gpu_check.py"], env)
    assert proc.returncode == 1, proc.stderr[-2000:]  # docs/gpu.md: no GPU -> one line, exit 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("no GPU: ") and "Traceback" not in proc.stderr
    proc = run(["-c", TORCH_PATH.format(root=str(ROOT))], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert [line.split()[0] for line in out[:-1]] == ["lenet5", "resnet18", "resnet18_pretrained"]
    assert out[-1] == "imported: []"


def test_the_keras_row_without_tensorflow_is_one_line():
    from bench import gpu_check

    text = gpu_check.format_table(
        "gpu_check: X", [{"model": "keras_resnet18", "skipped": "TensorFlow is not installed"}]
    )
    assert text.splitlines()[-1] == "keras_resnet18       skipped: TensorFlow is not installed"
