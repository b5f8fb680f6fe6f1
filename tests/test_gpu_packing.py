"""--gpus-per-trial auto and the driver's GPU checks: the packing arithmetic, the configs measured, the probe's code
path (the trial's fit, run here on the CPU), one-line refusals, and a GPU-less trial reported once."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest
import torch

import run_search
from search_driver import ROOT, cli, cluster, summary
from search_driver import gpu_packing as gp
from search_driver.tuner import make_trainable
from search_spaces import get_space
from trainables import metric_names as M
from trainables.torch_device import choose_precision

GiB = 2**30


@pytest.mark.parametrize(
    ("peak", "context", "total", "k", "fraction"),
    [
        (4 * GiB, GiB // 2, 24 * GiB, 4, 0.25),  # (4 + 0.5) x 1.15 = 5.2 GiB: 4 fit in 24 GiB, 5 do not
        (5 * GiB, GiB // 2, 24 * GiB, 3, 0.3333),  # 6.3 GiB each: 3; 1/3 rounded down so 3 x 0.3333 <= 1
        (9 * GiB, GiB, 24 * GiB, 2, 0.5),
        (10 * 2**20, 300 * 2**20, 24 * GiB, gp.MAX_TRIALS_PER_GPU, 0.125),  # LeNet: capped, compute-bound beyond
    ],
)
def test_packing_is_the_largest_k_that_fits_with_headroom(peak, context, total, k, fraction):
    p = gp.choose_packing(peak, context, total, headroom=0.15)
    assert (p.trials_per_gpu, p.gpu_fraction) == (k, fraction)
    assert p.trials_per_gpu * p.need_bytes <= total
    assert p.trials_per_gpu == gp.MAX_TRIALS_PER_GPU or (p.trials_per_gpu + 1) * p.need_bytes > total


def test_a_trial_larger_than_the_gpu_is_one_line():
    with pytest.raises(gp.PackingError, match=r"one trial needs .* more than the GPU's 15.00 GiB") as e:
        gp.choose_packing(14 * GiB, GiB, 15 * GiB)
    assert "\n" not in str(e.value)


def test_hungriest_configs_take_the_largest_batch_and_resolution_and_every_variant():
    space, defaults = get_space("resnet18_pretrained")
    configs = gp.hungriest_configs(space, defaults, {"model": "resnet18_pretrained", "max_epochs": 20, "seed": 0})
    assert len(configs) == len(space["optimizer"].categories)  # one per optimizer (no stem choice here)
    for c in configs:
        assert (c["batch_size"], c["resolution"], c["freeze_epochs"]) == (256, 224, 0)
        assert c["model"] == "resnet18_pretrained" and c["crop_padding"] == 0  # constants of the space kept
    space, defaults = get_space("resnet18")
    configs = gp.hungriest_configs(space, defaults, {"model": "resnet18"})
    assert {c["stem"] for c in configs} == {"cifar", "imagenet"} and {c["batch_size"] for c in configs} == {256}


def test_the_probe_runs_the_trials_fit_for_a_few_steps(tiny_arrays):
    """On the CPU here; on a GPU `measure` wraps exactly this with the allocator's peak statistics."""
    space, defaults = get_space("lenet5")
    config = gp.hungriest_configs(space, defaults, {"model": "lenet5", "seed": 0})[0]
    model, reports = gp.run_probe({**config, "batch_size": 8}, tiny_arrays, torch.device("cpu"), steps=2)
    cpu = choose_precision(torch.device("cpu")).name  # bf16 where this CPU has it natively (test_cpu_precision.py)
    assert len(reports) == 1 and set(reports[0]) == set(M.REPORT_KEYS) and reports[0][M.PRECISION] == cpu


def test_console_line_fits_120_columns():
    info = {"trials_per_gpu": 3, "gpu_fraction": 0.3333, "headroom": 0.15, "measured": {
        "peak_reserved": 5 * GiB, "context": GiB // 2, "total": 24 * GiB, "gpu": "NVIDIA A10G", "precision": "bf16",
        "config": {"batch_size": 256, "resolution": 224, "optimizer": "adamw"}}}  # fmt: skip
    text = gp.describe(info)
    assert all(len(line) <= 120 for line in text.splitlines()), text
    assert "3 trials per GPU" in text and "0.3333 GPU each" in text and "peak 5.00 GiB" in text


def test_gpus_per_trial_accepts_auto_or_a_number():
    assert cli.parse_args(["--gpus-per-trial", "auto"]).gpus_per_trial == "auto"
    assert cli.parse_args(["--gpus-per-trial", "0.25"]).gpus_per_trial == 0.25
    with pytest.raises(argparse.ArgumentTypeError):
        cli.gpus_arg("some")


def test_auto_without_a_gpu_is_one_line_exit_2(image_folder, tmp_path, capsys):
    assert torch.cuda.device_count() == 0  # this machine
    code = run_search.main(["--data-dir", str(image_folder), "--gpus-per-trial", "auto", "--storage-path",
                            str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    first, *more = err.splitlines()  # one error, continued on indented lines past 120 columns
    assert code == 2 and first.startswith("error: ") and all(ln.startswith("  ") for ln in more)
    err = err.replace("\n  ", " ")
    assert "--gpus-per-trial auto measures a training step on a GPU" in err and "no CUDA GPU" in err


def test_two_gpus_per_trial_are_refused_in_one_line():
    with pytest.raises(cli.UsageError, match="a trial trains on one GPU") as e:
        cluster.check_one_gpu_per_trial(SimpleNamespace(gpus_per_trial=2.0))
    assert "\n" not in str(e.value)
    for ok in (1.0, 0.25, "auto"):
        cluster.check_one_gpu_per_trial(SimpleNamespace(gpus_per_trial=ok))


def test_error_causes_name_each_cause_once():
    gpu = "ray.exceptions.RayTaskError: ...\nTraceback\n  File x\nGPUUnavailableError: this trial holds 0.5 GPU but"
    results = [SimpleNamespace(error=e) for e in (RuntimeError(gpu), RuntimeError(gpu), None, ValueError("x"))]
    assert summary.error_causes(results) == {"GPUUnavailableError: this trial holds 0.5 GPU but": 2, "x": 1}


@pytest.mark.slow
def test_gpu_share_on_a_node_without_cuda_is_caught_before_the_search_and_reported_once(tiny_arrays, tmp_path):
    """A Ray node declaring a (logical) GPU, where torch finds no CUDA: the driver's probe refuses in one line;
    trials started anyway fail at once with one line each, and the summary names the cause once."""
    import ray
    from ray import tune

    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # fmt: skip
    try:
        with pytest.raises(gp.PackingError, match="a probe task on a GPU node held 0.5 GPU but torch") as e:
            gp.check_gpu_usable("torch", 0.5)
        assert "\n" not in str(e.value)
        args = SimpleNamespace(
            model="lenet5", cpus_per_trial=1, gpus_per_trial=0.5, storage_path=str(tmp_path), name="x"
        )
        trainable = make_trainable(args, tiny_arrays)
        config = {"model": "lenet5", "lr": 1e-3, "batch_size": 16, "max_epochs": 1, "seed": 0}
        tuner = tune.Tuner(trainable, param_space=config, tune_config=tune.TuneConfig(num_samples=2),
                           run_config=tune.RunConfig(verbose=0, storage_path=str(tmp_path)))  # fmt: skip
        results = tuner.fit()
    finally:
        ray.shutdown()
    causes = summary.error_causes(results)
    assert len(causes) == 1 and results.num_errors == 2
    [(cause, n)] = causes.items()
    assert n == 2 and cause.startswith("GPUUnavailableError: this trial holds 0.5 GPU but torch")


def test_gpu_check_without_a_gpu_says_so_in_one_line(capsys):
    from bench import gpu_check

    assert gpu_check.main([]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("no GPU: ") and "requirements-gpu.txt" in err


def test_gpu_check_table_format():
    from bench import gpu_check

    row = {"model": "resnet18_pretrained", "resolution": 224, "batch_size": 256, "precision": "bf16",
           "images_per_s": 1234.5, "peak_reserved": 4 * GiB, "context": GiB // 2, "total": 24 * GiB}  # fmt: skip
    text = gpu_check.format_table("gpu_check: NVIDIA A10G", [row, {**row, "peak_reserved": 9 * GiB},
                                                              {"model": "keras_resnet18", "error": "boom"}])  # fmt: skip
    lines = text.splitlines()
    assert lines[1].split() == ["model", "res", "batch", "precision", "images/s", "peak", "GiB", "context", "GiB",
                                "2/GPU", "4/GPU"]  # fmt: skip
    assert lines[2].split() == ["resnet18_pretrained", "224", "256", "bf16", "1234", "4.00", "0.50", "yes", "yes"]
    assert lines[3].split()[-2:] == ["yes", "no"]  # 9.5 GiB x 1.15: 2 fit in 24 GiB, 4 do not
    assert lines[4] == "keras_resnet18       error: boom" and all(len(line) <= 120 for line in lines)
