"""LR range test: torch-lr-finder fed by our on-device batches; the CLI's --lr-find and --lr-range-from-finder."""

from __future__ import annotations

import json
import math

import pytest
import torch

from trainables.lr_finder import LRFindError, OnDeviceBatches, centred_lr_range, lr_range_test, valley

CPU = torch.device("cpu")
LENET = dict(model="lenet5", batch_size=16, optimizer="adam", flip=True, crop_padding=2, cutout=0, dropout=0.0,
             label_smoothing=0.0, seed=0)  # fmt: skip
PNG = b"\x89PNG\r\n\x1a\n"


def test_finite_suggestion_and_a_labelled_plot(tiny_arrays, tmp_path):
    result = lr_range_test(LENET, tiny_arrays, device=CPU, num_iter=40)
    assert math.isfinite(result.suggested_lr) and result.lrs[0] < result.suggested_lr <= result.lrs[-1]
    assert len(result.lrs) == len(result.losses) <= 40
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:], strict=False))  # exponential sweep, increasing
    ax = result.figure.axes[0]
    assert "learning rate" in ax.get_xlabel() and "loss" in ax.get_ylabel() and ax.get_xscale() == "log"
    result.figure.savefig(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").read_bytes()[:8] == PNG


def test_a_nan_loss_ends_the_curve_and_too_short_a_curve_is_an_error(tiny_arrays):
    # SGD up to lr 1e6 blows up to inf/NaN: the curve is cut at the first non-finite loss.
    cfg = {**LENET, "optimizer": "sgd"}
    result = lr_range_test(cfg, tiny_arrays, device=CPU, num_iter=60, start_lr=1e-4, end_lr=1e6)
    assert result.stopped_early and all(math.isfinite(v) for v in result.losses)
    assert math.isfinite(result.suggested_lr)
    with pytest.raises(LRFindError, match="too early"):
        lr_range_test(cfg, tiny_arrays, device=CPU, num_iter=60, start_lr=1e5, end_lr=1e9)


def test_batches_are_prepared_like_training(tiny_arrays):
    from trainables.augment import Augment

    x = torch.from_numpy(tiny_arrays["x_train"])
    y = torch.from_numpy(tiny_arrays["y_train"])
    zeros, ones = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    batches = OnDeviceBatches(x, y, 16, zeros, ones, Augment(crop_scale=0.5), 40, torch.Generator().manual_seed(0))
    epoch = list(batches)
    assert len(epoch) == len(x) // 16  # as train_one_epoch: len(x) // 16 batches holding every image once
    assert sum(len(yb) for _, yb in epoch) == len(x) and {len(yb) for _, yb in epoch} <= {16, 17, 18, 19}
    xb, yb = epoch[0]
    assert xb.shape == (len(yb), 3, 40, 40) and xb.dtype == torch.float32


def test_valley_ignores_the_fall_after_a_blow_up():
    """The real LeNet-5 curve's shape: flat, a short fall to the minimum, a spike, then a fall from the spike."""
    losses = [2.30] * 10 + [2.29, 2.27, 2.24, 2.20, 2.18] + [2.25] * 3 + [3.3, 3.2, 3.1, 3.0]
    start, end, best = valley(losses)
    assert (start, end) == (9, 14) and start < best < end  # the fall before the minimum, not the one after


def test_centred_lr_range():
    assert centred_lr_range(1e-3) == pytest.approx((1e-4, 3e-3))


@pytest.mark.slow
def test_cli_lr_find_prints_the_suggestion_and_saves_the_plot(image_folder, tmp_path):
    from cli_run import run_cli

    proc = run_cli("--model", "lenet5", "--data-dir", image_folder, "--lr-find", "--storage-path", tmp_path,
                   "--name", "lrf")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("suggested lr:"))
    assert math.isfinite(float(line.split()[2]))
    assert (tmp_path / "lrf" / "lr_find.png").read_bytes()[:8] == PNG
    assert not (tmp_path / "lrf" / "experiment.json").exists()  # no search


@pytest.mark.slow
def test_cli_lr_range_from_finder_centres_the_search(image_folder, tmp_path):
    from cli_run import run_cli, trial_results

    proc = run_cli("--model", "lenet5", "--data-dir", image_folder, "--smoke-test", "--lr-range-from-finder",
                   "--storage-path", tmp_path, "--name", "centred", "--num-cpus", 2)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "centred" / "experiment.json").read_text())
    s = info["lr_finder"]["suggested_lr"]
    assert info["search_space"]["lr"]["lower"] == pytest.approx(s / 10)
    assert info["search_space"]["lr"]["upper"] == pytest.approx(s * 3) and info["search_space"]["lr"]["log"]
    lrs = sorted(rows[0]["config"]["lr"] for rows in trial_results(tmp_path / "centred").values())
    assert any(lr == pytest.approx(s) for lr in lrs)  # the first trial runs at the suggestion
    assert all(s / 10 <= lr <= s * 3 for lr in lrs)
    assert (tmp_path / "centred" / "lr_find.png").exists()
