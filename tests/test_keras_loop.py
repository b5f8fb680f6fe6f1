"""Keras ResNet-18: builder and Block, augmentation, the training loop (metric keys, exact resume, divergence),
the Ray trainable's checkpoint glue, TF thread set-up, and --smoke-test end to end."""

from __future__ import annotations

import json
import os
import subprocess
from unittest import mock

import numpy as np
import pytest
from cli_run import run_python

from trainables import metric_names as M
from trainables.keras_env import keras, tf
from trainables.models import build_model
from trainables.models.keras_resnet import Block, keras_resnet18

# imagenet stem: ~10x cheaper than the 3x3 stem on a CPU, the same loop
BASE = dict(model="keras_resnet18", stem="imagenet", lr=3e-3, batch_size=16, max_epochs=2, optimizer="adam",
            schedule="cosine", weight_decay=1e-4, flip=True, crop_padding=2, shift=0.05, cutout=4,
            label_smoothing=0.1, seed=0)  # fmt: skip


def n_trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# ---------------------------------------------------------------------------------------------------------------
# model


@pytest.mark.parametrize(("stem", "params"), [("cifar", 11_173_962), ("imagenet", 11_181_642)])
def test_builder_shape_and_parameter_count(stem, params):
    model = keras_resnet18((32, 32, 3), num_classes=10, stem=stem)
    assert n_trainable(model) == params  # exactly torchvision's resnet18 with the same stem (tests/test_models.py)
    assert model.count_params() == params + 9_600  # + BatchNorm moving mean/variance
    out = model(np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32"), training=False)
    assert out.shape == (2, 10) and out.dtype == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out).sum(1), 1.0, rtol=1e-5)  # softmax probabilities


def test_registry_builds_it_with_the_config_keys_it_declares():
    model = build_model("keras_resnet18", num_classes=7, stem="cifar", lr=0.1, input_shape=(16, 16, 3))
    assert model.output_shape == (None, 7) and model.input_shape == (None, 16, 16, 3)
    first_conv = next(la for la in model.layers if isinstance(la, keras.layers.Conv2D))
    assert first_conv.kernel_size == (3, 3) and first_conv.strides == (1, 1)
    with pytest.raises(ValueError, match="cifar, imagenet"):
        keras_resnet18(stem="tiny")


def test_block_identity_shortcut():
    block = Block(64, stride=1)
    block.build((None, 8, 8, 64))
    assert block.projection is None
    assert n_trainable(block) == 2 * 3 * 3 * 64 * 64 + 2 * 2 * 64  # two convs, two BN (gamma, beta), nothing else
    for conv in (block.conv1, block.conv2):  # residual branch -> BN(0) = 0 at init, so the block is relu(x)
        conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 64)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x, training=False)), np.maximum(x, 0), atol=1e-6)


@pytest.mark.parametrize(("in_ch", "filters", "stride"), [(64, 64, 2), (64, 128, 1), (64, 128, 2)])
def test_block_projection_shortcut(in_ch, filters, stride):
    block = Block(filters, stride=stride)
    out = block(np.zeros((2, 8, 8, in_ch), "float32"))
    assert out.shape == (2, 8 // stride, 8 // stride, filters)
    conv, bn = block.projection.layers
    assert conv.kernel.shape == (1, 1, in_ch, filters) and conv.strides == (stride, stride)
    assert isinstance(bn, keras.layers.BatchNormalization)
    assert Block.from_config(block.get_config()).get_config() == block.get_config()


# ---------------------------------------------------------------------------------------------------------------
# augmentation


def test_augmentations_are_per_image_and_stateless():
    from trainables.keras_loop import cutout, random_flip, translate

    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(1, 255, size=(64, 8, 8, 3)), tf.uint8)  # no zeros in the input
    seed = tf.constant([1, 2], tf.int64)
    zero = translate(x, 2, 2, seed, "zero").numpy()
    np.testing.assert_array_equal(zero, translate(x, 2, 2, seed, "zero").numpy())  # a pure function of the seed
    assert not np.array_equal(zero, translate(x, 2, 2, tf.constant([1, 3], tf.int64), "zero").numpy())
    shifts = set()
    for img, src in zip(zero, x.numpy(), strict=True):  # each image is its source shifted by some |d| <= 2
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(img, np.roll(src, (dy, dx), axis=(0, 1)) * _inside(8, dy, dx))
        ]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 10  # per image, not one shift for the whole batch
    nearest = translate(x, 2, 2, seed, "nearest").numpy()
    assert (nearest > 0).all()  # edges repeated, never zero-filled
    flipped = random_flip(x, seed).numpy()
    mirrored = [np.array_equal(f, s[:, ::-1]) for f, s in zip(flipped, x.numpy(), strict=True)]
    assert all(m or np.array_equal(f, s) for m, f, s in zip(mirrored, flipped, x.numpy(), strict=True))
    assert 10 < sum(mirrored) < 54
    holes = cutout(tf.ones((64, 8, 8, 3)), 4, seed).numpy()
    assert ((holes == 0).sum(axis=(1, 2, 3)) <= 4 * 4 * 3).all() and (holes == 0).any()


def _inside(size, dy, dx):
    m = np.zeros((size, size, 1), np.uint8)
    m[max(dy, 0) : size + min(dy, 0), max(dx, 0) : size + min(dx, 0)] = 1
    return m


# ---------------------------------------------------------------------------------------------------------------
# training loop


def run(config, data, checkpoint=None, save_at=None, directory=None, device=None):
    from trainables.keras_loop import fit, save_checkpoint

    reports = []

    def report(result, state):
        reports.append(result)
        if state["epoch"] == save_at:
            save_checkpoint(state, directory)

    return fit(config, data, report, checkpoint=checkpoint, device=device), reports


@pytest.fixture(scope="module")
def trained(tiny_arrays, tmp_path_factory):
    """BASE trained for 2 epochs, with the checkpoint written after epoch 1 (shared: a fit costs seconds)."""
    directory = tmp_path_factory.mktemp("epoch1")
    model, reports = run(BASE, tiny_arrays, save_at=1, directory=str(directory))
    return model, reports, directory


@pytest.mark.slow
def test_fit_reports_the_torch_metric_keys_and_resumes_exactly(trained, tiny_arrays, tmp_path):
    from trainables.keras_loop import load_checkpoint, predict, save_model

    model, reports, checkpoint_dir = trained
    assert [r[M.EPOCH] for r in reports] == [1, 2]
    for r in reports:
        assert set(r) == set(M.REPORT_KEYS)
        assert 0 <= r[M.VAL_ACC] <= 1 and r[M.IMAGES_PER_S] > 0 and not r[M.DIVERGED]
    assert reports[1][M.TRAIN_LOSS] < reports[0][M.TRAIN_LOSS]
    assert reports[0][M.LR] < BASE["lr"] and reports[1][M.LR] == pytest.approx(0.0, abs=1e-9)  # cosine to 0
    assert sorted(os.listdir(checkpoint_dir)) == ["model.keras", "state.json"]

    # as if the trial died after epoch 1: same batches, same augmentation, same optimizer state
    resumed, reports_resumed = run(BASE, tiny_arrays, checkpoint=load_checkpoint(str(checkpoint_dir)))
    assert [r[M.EPOCH] for r in reports_resumed] == [2]
    assert reports_resumed[0][M.TRAIN_LOSS] == pytest.approx(reports[1][M.TRAIN_LOSS], rel=1e-5)
    for a, b in zip(model.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    probs = predict(model, tiny_arrays["x_val"], mean=tiny_arrays["mean"], std=tiny_arrays["std"])
    assert probs.shape == (len(tiny_arrays["y_val"]), 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    val_acc = (probs.argmax(1) == tiny_arrays["y_val"]).mean()
    assert val_acc == pytest.approx(reports[-1][M.VAL_ACC])  # predict (NCHW input) == the loop's validation
    path = save_model(model, str(tmp_path / "final"))
    assert path.endswith("final/model.keras")
    loaded = keras.saving.load_model(path)
    again = predict(loaded, tiny_arrays["x_val"], mean=tiny_arrays["mean"], std=tiny_arrays["std"])
    np.testing.assert_allclose(again, probs, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_diverging_trial_reports_and_stops(tiny_arrays):
    config = {**BASE, "lr": 1e6, "optimizer": "sgd", "schedule": "constant", "label_smoothing": 0.0, "max_epochs": 3}
    _, reports = run(config, tiny_arrays, device="cpu")  # report.py's torch-style device name
    assert len(reports) == 1
    # large but finite, so ASHA's cutoffs and TPE stay finite (tests/test_search_quality.py)
    assert reports[0][M.DIVERGED] and reports[0][M.VAL_LOSS] == M.DIVERGED_LOSS and reports[0][M.VAL_ACC] == 0.0


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "onecycle"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_every_optimizer_and_schedule(optimizer, schedule):
    from trainables.keras_loop import make_optimizer, make_schedule

    config = {"optimizer": optimizer, "lr": 0.1, "schedule": schedule}
    opt = make_optimizer(config, steps_per_epoch=10, max_epochs=8)
    lr = make_schedule(config, steps_per_epoch=10, max_epochs=8)
    lrs = [lr] * 80 if schedule == "constant" else [float(lr(step)) for step in range(80)]
    assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(lrs[0])  # at step 0
    if schedule == "step":  # x0.1 after 7 epochs, as torch's StepLR(7, 0.1)
        assert lrs[69] == pytest.approx(0.1) and lrs[70] == pytest.approx(0.01)
    if schedule == "cosine":
        assert lrs[0] == pytest.approx(0.1) and lrs[-1] < 0.001
    if schedule == "onecycle":  # warm up from lr/25 to lr over 30% of the steps, then anneal
        assert lrs[0] == pytest.approx(0.004) and lrs[24] == pytest.approx(0.1, rel=1e-3) and lrs[-1] < 0.001
    if optimizer == "sgd":
        assert opt.nesterov and opt.momentum == 0.9
    with pytest.raises(ValueError, match="adam, adamw, sgd"):
        make_optimizer({"optimizer": "lion", "lr": 0.1}, 1, 1)


@pytest.mark.slow
def test_ray_trainable_resumes_from_its_checkpoint_and_checkpoints_each_epoch(trained, tiny_arrays):
    """train_trial's Ray glue (Keras), without a cluster: tune.get_checkpoint gives the epoch-1 checkpoint, tune.report
    receives the rest (each with a checkpoint)."""
    from ray import tune

    from trainables.keras_loop import load_checkpoint
    from trainables.tune_trial import train_trial

    checkpoint_dir = str(trained[2])
    reported = []

    def fake_report(metrics, checkpoint):
        with checkpoint.as_directory() as d:
            reported.append((metrics, load_checkpoint(d)["epoch"]))

    context = mock.Mock(get_assigned_resources=lambda: {"CPU": 1.0})
    with (
        mock.patch("ray.get_runtime_context", return_value=context),
        mock.patch.object(tune, "get_checkpoint", return_value=tune.Checkpoint.from_directory(checkpoint_dir)),
        mock.patch.object(tune, "report", side_effect=fake_report),
        mock.patch("trainables.keras_loop.setup_tensorflow") as setup,
    ):
        train_trial({**BASE, "max_epochs": 3}, tiny_arrays)
    setup.assert_called_once_with(1.0, 0.0)
    assert [(m[M.EPOCH], epoch) for m, epoch in reported] == [(2, 2), (3, 3)]
    assert all(set(m) == {*M.REPORT_KEYS, M.NODE_ID} for m, _ in reported)


# ---------------------------------------------------------------------------------------------------------------
# TensorFlow set-up (GPU shares: tests/test_gpu.py, with TF's physical-device list faked in a fresh process)


def test_gpu_total_memory_asks_nvidia_smi_for_the_trials_gpu(monkeypatch):
    from trainables.keras_loop import gpu_total_memory_mb

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # what Ray sets for a trial on physical GPU 3
    done = subprocess.CompletedProcess([], 0, stdout="16160\n")
    with mock.patch("subprocess.run", return_value=done) as smi:
        assert gpu_total_memory_mb(0) == 16160
    assert smi.call_args.args[0][-2:] == ["-i", "3"]
    with mock.patch("subprocess.run", side_effect=FileNotFoundError):
        assert gpu_total_memory_mb(0) is None


def test_fresh_process_threads_quiet_start_and_torch_after_tf():
    """Real TF in a fresh process: threads can only be set before TF runs anything; TF's start-up lines are
    filtered; torchvision.ops (which loads triton) imported after TF must not segfault (tensorflow#124205)."""
    code = (
        "from trainables.keras_loop import setup_tensorflow, tf\n"
        "print(setup_tensorflow(cpus=1), tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
        "import torchvision.ops\n"
        "print('torch ok')"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["cpu", "1", "1", "torch", "ok"], proc.stderr
    assert "oneDNN" not in proc.stderr and "absl" not in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# the CLI


@pytest.mark.slow
def test_smoke_test_end_to_end(keras_smoke):
    from cli_run import trial_results

    proc, exp = keras_smoke.proc, keras_smoke.exp
    assert json.loads((exp / "experiment.json").read_text())["framework"] == "keras"
    results = trial_results(exp)
    assert len(results) == 2
    for rows in results.values():  # --max-epochs 1, given beside --smoke-test
        assert len(rows) == 1 and set(M.REPORT_KEYS) <= set(rows[0])
    checkpoints = list(exp.glob("trial_*/checkpoint_*"))
    assert checkpoints and all(sorted(os.listdir(c)) == ["model.keras", "state.json"] for c in checkpoints)
    assert "oneDNN" not in proc.stdout + proc.stderr  # TF start-up noise stays out of the search output
    assert "Best trials by val_loss" in proc.stdout


@pytest.mark.slow
def test_a_fresh_process_loads_a_keras_resnet_checkpoint(tmp_path):
    """report.py --no-retrain on keras_resnet18: a process that never built the model loads its checkpoint (the
    custom Block layer is registered by the framework's from_checkpoint, not by an earlier build)."""
    from trainables.keras_loop import save_checkpoint
    from trainables.models import build_model

    model = build_model("keras_resnet18", 3, stem="imagenet")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    save_checkpoint({"model": model, "epoch": 4}, str(tmp_path))
    code = (
        "from trainables.framework import framework_of; "
        f"m, epoch = framework_of('keras_resnet18').from_checkpoint({str(tmp_path)!r}, {{'model': 'keras_resnet18'}}, 3); "
        "print(epoch, m.output_shape)"
    )
    proc = run_python(code, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "4"
