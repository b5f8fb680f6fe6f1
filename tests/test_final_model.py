"""The shipped model's options (analysis/final_model.py): the refit's data through the real loops, weight averaging
with BatchNorm statistics recomputed, flip test-time augmentation inside the exported files, and which rows the
report's table gets."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sample_data import lenet_config

from analysis.final_model import Options, options_from_args, refit_data, variants
from analysis.retrain import local_framework, retrain
from analysis.trials import ReportError
from image_data.cache import load_dataset
from trainables import metric_names as M
from trainables import torch_loop
from trainables.augment import normalize
from trainables.augment_spec import Augment

CPU = torch.device("cpu")
NO_AUGMENT = dict(flip=False, crop_padding=0, cutout=0)
LENET = lenet_config(lr=1e-2, optimizer="sgd", weight_decay=0.0, **NO_AUGMENT)


@pytest.fixture(scope="module")
def dataset(image_folder, tmp_path_factory):
    return load_dataset(image_folder, cache_dir=tmp_path_factory.mktemp("cache"))


def image_keys(x_nchw: np.ndarray) -> Counter:
    """Each image by its bytes (the generated images are noise: no two alike)."""
    return Counter(img.tobytes() for img in np.ascontiguousarray(x_nchw))


# ---------------------------------------------------------------------------------------------------------------
# refit: every labelled image once per epoch, never a test image


def test_refit_data_is_every_labelled_image_once_and_no_test_image(dataset):
    data = refit_data(dataset.search_arrays())
    labelled = image_keys(np.concatenate([dataset.x_train, dataset.x_val]))
    assert image_keys(data["x_train"]) == labelled and max(labelled.values()) == 1
    assert not set(image_keys(dataset.x_test)) & set(labelled)
    assert len(data["x_val"]) == len(data["y_val"]) == 0
    # labels travel with their images
    by_image = {
        img.tobytes(): y
        for img, y in zip(
            np.concatenate([dataset.x_train, dataset.x_val]),
            np.concatenate([dataset.y_train, dataset.y_val]),
            strict=True,
        )
    }
    assert all(by_image[img.tobytes()] == y for img, y in zip(data["x_train"], data["y_train"], strict=True))


def test_the_torch_loop_feeds_every_refit_image_once_per_epoch(dataset, monkeypatch):
    """What the model is fed, batch by batch, turned back into images: each epoch is every labelled image exactly
    once (60 images at batch 16: 3 batches of 20, no image left out), no test image ever; nothing validated."""
    data = refit_data(dataset.search_arrays())
    fed = []
    real_build = torch_loop.build_model

    def recording_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda m, inputs: fed.append(inputs[0].detach().clone()) if m.training else None
        )
        return model

    monkeypatch.setattr(torch_loop, "build_model", recording_build)
    reports = []
    torch_loop.fit(LENET, data, lambda r, s: reports.append(r), device=CPU)
    mean, std = torch_loop.norm_tensors(data["mean"], data["std"], CPU)
    images = [((x * std + mean) * 255).round().to(torch.uint8).numpy() for x in fed]
    steps = len(images) // 2
    assert steps == len(data["y_train"]) // 16 and len(images) == 2 * steps
    labelled, test = image_keys(data["x_train"]), set(image_keys(dataset.x_test))
    for epoch in (images[:steps], images[steps:]):
        seen = image_keys(np.concatenate(epoch))
        assert seen == labelled and not set(seen) & test
    assert all(np.isnan(r[M.VAL_LOSS]) and np.isnan(r[M.VAL_ACC]) for r in reports)


def test_the_keras_stream_holds_every_refit_image_once_per_epoch(dataset):
    from trainables.keras_loop import to_nhwc, train_stream

    data = refit_data(dataset.search_arrays())
    stream = train_stream(
        to_nhwc(data["x_train"]),
        data["y_train"],
        num_classes=3,
        batch_size=16,
        epochs=range(1, 3),
        seed=0,
        augment=Augment(**NO_AUGMENT),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    batches = [np.round(xb.numpy() * 255).astype(np.uint8).transpose(0, 3, 1, 2) for xb, _ in stream]
    steps = len(data["y_train"]) // 16
    assert len(batches) == 2 * steps
    for epoch in (batches[:steps], batches[steps:]):
        assert image_keys(np.concatenate(epoch)) == image_keys(data["x_train"])


def test_a_refit_keeps_its_last_epoch(dataset):
    fw = local_framework("torch", "cpu")
    run = retrain(fw, LENET, refit_data(dataset.search_arrays()), 2, lambda r: None, metric=M.VAL_LOSS, mode="min")
    assert run.best_epoch == 2 and run.trained_on == "train+val" and np.isnan(run.kept_value)


# ---------------------------------------------------------------------------------------------------------------
# weight averaging: the EMA, and BatchNorm statistics recomputed for it

RESNET = dict(
    model="resnet18",
    stem="imagenet",
    lr=0.05,
    max_epochs=2,
    optimizer="sgd",
    schedule="constant",
    weight_decay=0.0,
    seed=0,
    **NO_AUGMENT,
)


def test_torch_ema_is_the_moving_average_of_every_steps_weights(dataset):
    """One step per epoch (batch = every image): after steps w1, w2 the EMA is w1, then d w1 + (1 - d) w2."""
    data = refit_data(dataset.search_arrays())
    config = {**RESNET, "batch_size": len(data["y_train"]), "ema_decay": 0.75}
    states = []
    torch_loop.fit(
        config,
        data,
        lambda r, s: states.append({k: {n: t.clone() for n, t in s[k].items()} for k in ("model", "ema")}),
        device=CPU,
    )
    (w1, e1), (w2, e2) = [(s["model"], s["ema"]) for s in states]
    name = "fc.weight"
    assert torch.equal(e1[name], w1[name])
    torch.testing.assert_close(e2[name], 0.75 * w1[name] + 0.25 * w2[name])
    assert not torch.allclose(e2[name], w2[name])


def test_torch_averaged_model_differs_from_the_last_epoch_and_recomputes_batchnorm(dataset):
    data = refit_data(dataset.search_arrays())
    n = len(data["y_train"])
    config = {**RESNET, "batch_size": n, "ema_decay": 0.75}
    fw = local_framework("torch", "cpu")
    run = retrain(fw, config, data, 2, lambda r: None, metric=M.VAL_LOSS, mode="min")
    last, averaged = run.model.state_dict(), run.averaged.state_dict()  # the refit keeps its last epoch
    assert not torch.allclose(averaged["fc.weight"], last["fc.weight"])
    # recomputed: bn1's statistics are those of the averaged conv1 over the training images (one batch of all n)
    mean, std = torch_loop.norm_tensors(data["mean"], data["std"], CPU)
    with torch.no_grad():
        out = run.averaged.conv1(normalize(torch.from_numpy(data["x_train"]), mean, std))
    torch.testing.assert_close(run.averaged.bn1.running_mean, out.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(run.averaged.bn1.running_var, out.var((0, 2, 3), unbiased=True), atol=1e-5, rtol=1e-4)
    # not the training's running statistics, nor the stale copy the average started from
    assert not torch.allclose(run.averaged.bn1.running_mean, last["bn1.running_mean"])
    assert not torch.allclose(run.averaged.bn1.running_mean, torch.zeros_like(last["bn1.running_mean"]))


@pytest.mark.slow
def test_keras_averaged_model_differs_from_the_last_epoch_and_recomputes_batchnorm(dataset):
    from trainables.keras_env import keras
    from trainables.keras_loop import normalize, to_nhwc

    data = refit_data(dataset.search_arrays())
    n = len(data["y_train"])
    config = {**RESNET, "model": "keras_resnet18", "batch_size": n, "ema_decay": 0.75}
    fw = local_framework("keras", "cpu")
    run = retrain(fw, config, data, 2, lambda r: None, metric=M.VAL_LOSS, mode="min")
    last = run.model.get_weights()
    averaged = run.averaged.get_weights()
    differ = [not np.allclose(a, b) for a, b in zip(averaged, last, strict=True)]
    assert any(differ)
    conv = next(layer for layer in run.averaged.layers if isinstance(layer, keras.layers.Conv2D))
    bn = next(layer for layer in run.averaged.layers if isinstance(layer, keras.layers.BatchNormalization))
    out = keras.ops.convert_to_numpy(conv(normalize(to_nhwc(data["x_train"]), data["mean"], data["std"])))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), out.mean((0, 1, 2)), atol=1e-4, rtol=1e-3)
    trained_bn = next(layer for layer in run.model.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert not np.allclose(
        keras.ops.convert_to_numpy(bn.moving_mean), keras.ops.convert_to_numpy(trained_bn.moving_mean)
    )
    assert bn.momentum == trained_bn.momentum == 0.9  # the layer's own momentum is back after the recompute


# ---------------------------------------------------------------------------------------------------------------
# the options and the table's rows


def args(**kw):
    return SimpleNamespace(
        **{"refit": None, "ema": None, "flip_tta": None, "ensemble": None, "ema_decay": None, "no_retrain": False, **kw}
    )


def test_options_defaults_and_bad_combinations_are_one_line():
    from analysis.final_model import DEFAULTS, EMA_DECAY

    o = options_from_args(args())
    assert (o.refit, bool(o.ema_decay), o.flip_tta) == (DEFAULTS["refit"], DEFAULTS["ema"], DEFAULTS["flip_tta"])
    o = options_from_args(args(refit=False, ema=True, flip_tta=False))
    assert (o.refit, o.ema_decay, o.flip_tta) == (False, EMA_DECAY, False)
    assert options_from_args(args(no_retrain=True)).refit is False  # a checkpoint is not refitted
    with pytest.raises(ReportError, match="--no-retrain evaluates a checkpoint"):
        options_from_args(args(no_retrain=True, refit=True))
    with pytest.raises(ReportError, match="--ema-decay must be between 0 and 1"):
        options_from_args(args(ema=True, ema_decay=1.5))
    assert options_from_args(args(ensemble=True)).ensemble is True
    with pytest.raises(ReportError, match="--ensemble averages the retrain and the refit: it needs the refit"):
        options_from_args(args(ensemble=True, refit=False))
    with pytest.raises(ReportError, match="--no-retrain evaluates a checkpoint"):
        options_from_args(args(no_retrain=True, ensemble=True))


def test_the_ensemble_row_and_the_shipped_ensemble_use_the_plain_model_and_the_refit():
    both = Options(refit=True, ema_decay=0.0, flip_tta=True, ensemble=True)
    rows = variants(both, {"flip": True})
    assert [v.key for v in rows] == ["plain", "refit", "flip_tta", "ensemble", "shipped"]
    assert rows[3].ensemble and rows[3].uses_refit and not rows[3].refit
    assert rows[-1].ensemble and rows[-1].tta and rows[-1].uses_refit
    assert both.record({"flip": True}, 40, 50_000)["ensemble"] == {
        "members": ["plain", "refit"],
        "of": "class probabilities",
    }


def test_a_config_without_flips_gets_no_flip_tta():
    everything = Options(refit=True, ema_decay=0.999, flip_tta=True)
    assert [v.key for v in variants(everything, {"flip": True})] == ["plain", "refit", "ema", "flip_tta", "shipped"]
    shipped = variants(everything, {"flip": True})[-1]
    assert shipped.refit and shipped.averaged and shipped.tta
    rows = variants(everything, {"flip": False})
    assert [v.key for v in rows] == ["plain", "refit", "ema", "shipped"] and not any(v.tta for v in rows)
    record = everything.record({"flip": False}, 40, 50_000)
    assert record["flip_tta"] is False and record["flip_tta_asked"] is True
    only_tta = variants(Options(refit=False, ema_decay=0.0, flip_tta=True), {"flip": False})
    assert [v.key for v in only_tta] == ["plain"]  # the shipped model is the plain retrain
