"""resnet18_pretrained: real weight loading from a test-made hub cache or --weights, offline errors, the resized
training/evaluation path, freeze_epochs / backbone_lr_mult, and the CLI end to end (smoke search, one-line errors)."""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
from torchvision.models import resnet18 as tv_resnet18

from trainables import augment
from trainables import metric_names as M
from trainables.augment import Augment, prepare_batch, random_resized_crop, resize
from trainables.models import build_model
from trainables.models.pretrained import WEIGHTS, check_weights
from trainables.models.weights import WeightsError, cache_file, load_state_dict
from trainables.torch_loop import fit, predict

CPU = torch.device("cpu")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# An unreachable proxy: urllib fails at once, as offline, whatever network the test machine has.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


def untrained_state(seed: int) -> dict:
    torch.manual_seed(seed)
    return tv_resnet18().state_dict()


def assert_backbone_equals(model, state: dict) -> None:
    got = model.state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    assert len(backbone) == 120  # every conv/BN tensor of resnet18 (BN running stats included)
    for k in backbone:
        torch.testing.assert_close(got[k], state[k], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# weights


def test_backbone_comes_from_the_hub_cache_and_the_head_is_new(torch_home):
    f = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert cache_file(WEIGHTS) == f  # the file name torchvision's weights API gives, under $TORCH_HOME
    model = build_model("resnet18_pretrained", num_classes=3, resolution=64, lr=0.1)
    assert_backbone_equals(model, torch.load(f, weights_only=True))
    assert (model.fc.in_features, model.fc.out_features) == (512, 3)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 64, 64) and cfg["classifier"] == "fc"
    assert cfg["mean"] == pytest.approx(IMAGENET_MEAN) and cfg["std"] == pytest.approx(IMAGENET_STD)


def test_weights_path_is_used_instead_of_the_cache(tmp_path):
    state = untrained_state(seed=1)
    torch.save(state, tmp_path / "mine.pth")
    model = build_model("resnet18_pretrained", num_classes=5, weights_path=str(tmp_path / "mine.pth"))
    assert_backbone_equals(model, state)
    assert check_weights(str(tmp_path / "mine.pth")) == (tmp_path / "mine.pth").resolve()


def test_loading_is_weights_only(tmp_path):
    torch.save({"state": untrained_state(0), "extra": Path("anything")}, tmp_path / "pickled.pth")  # needs pickle
    with pytest.raises(WeightsError, match="weights_only=True"):
        check_weights(str(tmp_path / "pickled.pth"))


def test_a_file_of_another_architecture_is_refused(tmp_path):
    torch.save(build_model("lenet5", num_classes=10).state_dict(), tmp_path / "lenet.pth")
    with pytest.raises(WeightsError, match="not a state dict of torchvision's resnet18") as e:
        check_weights(str(tmp_path / "lenet.pth"))
    assert "\n" not in str(e.value)


def test_offline_without_cached_file_says_what_where_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(WeightsError) as e:
        check_weights()
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / "empty" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    assert WEIGHTS.url in msg and "--weights" in msg
    with pytest.raises(WeightsError, match="resnet18-f37072fd.pth"):  # a trial on such a node fails the same way
        load_state_dict(WEIGHTS)


def test_trials_of_one_node_download_once(tmp_path, monkeypatch):
    """Online with an empty cache: concurrent loads wait on the file lock, one download serves them all."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = untrained_state(2)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        time.sleep(0.3)  # the others arrive while the first is downloading
        torch.save(state, dst)

    results = []
    with mock.patch("torch.hub.download_url_to_file", fake_download):
        threads = [threading.Thread(target=lambda: results.append(load_state_dict(WEIGHTS))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert calls == [(WEIGHTS.url, "f37072fd")]  # once, with torchvision's hash check
    assert len(results) == 3 and all(torch.equal(r["conv1.weight"], state["conv1.weight"]) for r in results)


# ---------------------------------------------------------------------------------------------------------------
# batched resize and RandomResizedCrop


def test_random_resized_crop_of_the_whole_image_is_the_plain_resize():
    x = torch.rand(6, 3, 32, 32)
    out = random_resized_crop(x, 72, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, resize(x, 72), atol=1e-5, rtol=0)
    assert out.shape == (6, 3, 72, 72)


def test_random_resized_crop_boxes_have_the_asked_area_and_vary():
    ramp = torch.arange(32.0).view(1, 1, 1, 32).expand(64, 3, 32, 32)  # value = column index
    out = random_resized_crop(
        ramp, 64, scale=(0.25, 0.25), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(1)
    )
    span = out[:, 0, 0, -1] - out[:, 0, 0, 0]  # = box width x 63/64 for a 16-pixel-wide box away from the border
    assert ((span > 15.0) & (span <= 15.75 + 1e-4)).all()
    assert out[:, 0, 0, 0].unique().numel() > 20  # boxes at different places


def test_training_downsamples_a_box_as_evaluation_resizes_it():
    """A photo folder stored larger than the model's resolution: the training crop of the whole image is exactly
    evaluation's antialiased resize, and a smaller box is close to an exact antialiased crop of its pixels (plain
    bilinear grid_sample aliases texture: a mean error of 0.11-0.13 on noise for 2-3x downsampling)."""
    import torch.nn.functional as F

    from trainables.augment import antialiased_crops

    x = torch.rand(8, 3, 160, 160)  # texture: noise, the worst case for aliasing
    whole = random_resized_crop(x, 48, scale=(1.0, 1.0), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(whole, resize(x, 48), atol=1e-5, rtol=0)
    for side, offset in ((100, 30), (130, 20)):  # a box aligned to pixels, 2.1x and 2.7x larger than the output
        f, centre = side / 160, (offset + side / 2) / 160 * 2 - 1
        theta = torch.tensor([[f, 0, centre], [0, f, centre]]).expand(8, 2, 3)
        grid = F.affine_grid(theta, [8, 3, 48, 48], align_corners=False)
        box = x[:, :, offset : offset + side, offset : offset + side]
        exact = F.interpolate(box, size=(48, 48), mode="bilinear", align_corners=False, antialias=True)
        down = torch.full((8,), side / 48)
        assert (antialiased_crops(x, grid, down, down) - exact).abs().mean() < 0.04


def test_prepare_batch_resizes_and_crops_only_when_asked():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    g = torch.Generator().manual_seed(0)
    assert prepare_batch(x, mean, std, Augment(crop_scale=0.08), g, size=48).shape == (8, 3, 48, 48)
    torch.testing.assert_close(prepare_batch(x, mean, std, None, size=48), resize(x.float() / 255, 48))
    # The default path (LeNet/ResNet: no size, no crop_scale) never resamples.
    with mock.patch.object(augment, "resize", side_effect=AssertionError), \
         mock.patch.object(augment, "random_resized_crop", side_effect=AssertionError):  # fmt: skip
        assert prepare_batch(x, mean, std, Augment(), g).shape == (8, 3, 32, 32)
        assert prepare_batch(x, mean, std, None, size=32).shape == (8, 3, 32, 32)


# ---------------------------------------------------------------------------------------------------------------
# the training loop with a pretrained model

FINE_TUNE = dict(model="resnet18_pretrained", resolution=40, crop_scale=0.25, flip=True, crop_padding=0, cutout=0,
                 lr=1e-3, batch_size=16, optimizer="adam", schedule="constant", max_epochs=2, seed=0,
                 freeze_epochs=1, backbone_lr_mult=0.1)  # fmt: skip


@pytest.mark.slow
def test_freeze_epochs_and_backbone_lr_mult(tiny_arrays, torch_home):
    initial = torch.load(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth", weights_only=True)
    reports, states = [], []
    fit(FINE_TUNE, tiny_arrays, lambda r, s: (reports.append(r), states.append(copy.deepcopy(s))), device=CPU)
    assert [r[M.EPOCH] for r in reports] == [1, 2] and not any(r[M.DIVERGED] for r in reports)
    after1, after2 = states[0]["model"], states[1]["model"]
    torch.testing.assert_close(after1["layer1.0.conv1.weight"], initial["layer1.0.conv1.weight"], rtol=0, atol=0)
    assert not torch.equal(after2["layer1.0.conv1.weight"], initial["layer1.0.conv1.weight"])  # unfrozen
    groups = states[1]["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-4])  # head at lr, backbone at lr x 0.1
    assert len(groups[0]["params"]) == 2  # fc.weight, fc.bias
    assert reports[0][M.LR] == pytest.approx(1e-3)


def test_predict_feeds_the_model_its_resolution_and_imagenet_statistics(tiny_arrays):
    model = build_model("resnet18_pretrained", num_classes=3, resolution=48)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.from_numpy(tiny_arrays["x_val"][:4])
    data_mean, data_std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)  # ignored for this model
    logits = predict(model, x, mean=data_mean, std=data_std, device=CPU)
    assert logits.shape == (4, 3)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], resize((x.float() / 255 - mean) / std, 48))


# ---------------------------------------------------------------------------------------------------------------
# CLI (real Ray)


@pytest.mark.slow
def test_smoke_search_with_the_cached_weights(image_folder, tmp_path):
    from cli_run import run_cli, trial_results

    proc = run_cli("--model", "resnet18_pretrained", "--data-dir", image_folder, "--smoke-test",
                   "--storage-path", tmp_path, "--name", "pre", "--num-cpus", 2)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = trial_results(tmp_path / "pre")
    assert len(results) == 2
    for rows in results.values():
        assert rows[0]["config"]["resolution"] == 32  # --smoke-test's small resolution
        assert all(set(M.REPORT_KEYS) <= set(r) and not r[M.DIVERGED] for r in rows)
    info = json.loads((tmp_path / "pre" / "experiment.json").read_text())
    assert info["search_space"]["resolution"] == {"type": "constant", "value": 32}


@pytest.mark.slow
def test_smoke_search_offline_with_weights_path(image_folder, tmp_path):
    """No hub cache, no network: --weights alone is enough, and every trial loads that file."""
    torch.save(untrained_state(3), tmp_path / "r18.pth")
    proc = run_cli_offline("--model", "resnet18_pretrained", "--data-dir", image_folder, "--smoke-test",
                           "--weights", tmp_path / "r18.pth", "--resolution", 40, "--storage-path", tmp_path,
                           "--name", "w", "--num-cpus", 2, home=tmp_path / "empty")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    from cli_run import trial_results

    for rows in trial_results(tmp_path / "w").values():
        assert rows[0]["config"]["weights_path"] == str((tmp_path / "r18.pth").resolve())
        assert rows[0]["config"]["resolution"] == 40


def run_cli_offline(*args, home):
    from cli_run import run_cli

    return run_cli(*args, env={**OFFLINE, "TORCH_HOME": str(home)})


@pytest.mark.slow
def test_offline_missing_weights_is_one_line_before_ray(image_folder, tmp_path):
    from cli_run import one_line_error

    proc = run_cli_offline("--model", "resnet18_pretrained", "--data-dir", image_folder, "--storage-path", tmp_path,
                           home=tmp_path / "empty")  # fmt: skip
    line = one_line_error(proc, within=30)
    assert "resnet18-f37072fd.pth" in line and WEIGHTS.url in line and str(tmp_path / "empty") in line
    assert not list(tmp_path.glob("resnet18_pretrained-*"))  # the search never started


@pytest.mark.slow
def test_bad_weights_flags_are_one_line(image_folder, tmp_path):
    from cli_run import one_line_error, run_cli

    line = one_line_error(run_cli("--model", "resnet18_pretrained", "--data-dir", image_folder, "--weights",
                                  tmp_path / "nope.pth"), within=30)  # fmt: skip
    assert "nope.pth" in line and "no such file" in line
    line = one_line_error(run_cli("--model", "lenet5", "--data-dir", image_folder, "--weights", tmp_path), within=30)
    assert "pretrained" in line
    line = one_line_error(run_cli("--model", "lenet5", "--data-dir", image_folder, "--resolution", 64), within=30)
    assert "resolution" in line
