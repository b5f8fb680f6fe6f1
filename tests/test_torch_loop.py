"""The training loop without Ray: metric keys, exact resume from a checkpoint, divergence, CPU device set-up."""

import copy

import pytest
import torch

from trainables import metric_names as M
from trainables.torch_device import setup_device
from trainables.torch_loop import (
    OPTIMIZERS,
    SCHEDULES,
    fit,
    load_checkpoint,
    make_optimizer,
    make_scheduler,
    save_checkpoint,
)

CPU = torch.device("cpu")
BASE = dict(model="lenet5", lr=3e-3, batch_size=16, max_epochs=3, optimizer="adam", schedule="cosine",
            flip=True, crop_padding=2, cutout=4, dropout=0.0, label_smoothing=0.1, seed=0)  # fmt: skip


def run(config, data, checkpoint=None):
    reports, states = [], []
    model = fit(
        config,
        data,
        lambda r, s: (reports.append(r), states.append(copy.deepcopy(s))),
        device=CPU,
        checkpoint=checkpoint,
    )
    return model, reports, states


def test_reports_every_metric_key_each_epoch(tiny_arrays):
    _, reports, _ = run(BASE, tiny_arrays)
    assert [r[M.EPOCH] for r in reports] == [1, 2, 3]
    for r in reports:
        assert set(r) == set(M.REPORT_KEYS)
        assert 0 <= r[M.VAL_ACC] <= 1 and r[M.IMAGES_PER_S] > 0 and not r[M.DIVERGED]
    assert reports[-1][M.TRAIN_LOSS] < reports[0][M.TRAIN_LOSS]  # it learns the colour-coded classes


def test_resume_from_checkpoint_continues_exactly(tiny_arrays, tmp_path):
    """With dropout (torch's global RNG) and augmentation (the generator): bit-for-bit the uninterrupted run."""
    import random

    import numpy as np

    config = {**BASE, "dropout": 0.4}
    model_full, reports_full, states = run(config, tiny_arrays)
    save_checkpoint(states[0], str(tmp_path))  # as if the trial died after epoch 1
    # a new process: the global RNGs hold whatever they hold (fit reseeds them; the checkpoint must win)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    model_resumed, reports_resumed, _ = run(config, tiny_arrays, checkpoint=load_checkpoint(str(tmp_path)))
    assert [r[M.EPOCH] for r in reports_resumed] == [2, 3]
    assert reports_resumed[-1][M.TRAIN_LOSS] == reports_full[-1][M.TRAIN_LOSS]
    for a, b in zip(model_full.state_dict().values(), model_resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_rng_states_survive_weights_only_loading(tmp_path):
    import random

    import numpy as np

    from trainables.torch_loop import global_rng_state, set_global_rng_state

    save_checkpoint({"global_rng": global_rng_state(CPU)}, str(tmp_path))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_global_rng_state(load_checkpoint(str(tmp_path))["global_rng"], CPU)  # load_checkpoint: weights_only=True
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_diverging_trial_reports_and_stops(tiny_arrays):
    _, reports, _ = run({**BASE, "lr": 1e6, "label_smoothing": 0.0, "optimizer": "sgd", "schedule": "constant"},
                        tiny_arrays)  # fmt: skip
    assert len(reports) == 1
    # large but finite, so ASHA's cutoffs and TPE stay finite (tests/test_search_quality.py)
    assert reports[0][M.DIVERGED] and reports[0][M.VAL_LOSS] == M.DIVERGED_LOSS and reports[0][M.VAL_ACC] == 0.0


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_and_schedule(optimizer, schedule):
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = make_optimizer({"optimizer": optimizer, "lr": 0.1}, params)
    sched = make_scheduler({"schedule": schedule}, opt, steps_per_epoch=10, max_epochs=8)
    lrs = []
    for _ in range(80):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    if schedule == "step":  # StepLR(7 epochs, 0.1)
        assert lrs[68] == pytest.approx(0.1) and lrs[69] == pytest.approx(0.01)
    if schedule in ("cosine", "onecycle"):
        assert lrs[-1] < 0.01
    if optimizer == "sgd":
        assert opt.param_groups[0]["nesterov"]


def test_unknown_optimizer_and_schedule():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="adam, sgd, adamw"):
        make_optimizer({"optimizer": "lion", "lr": 0.1}, params)
    with pytest.raises(ValueError, match="cosine"):
        make_scheduler({"schedule": "warm"}, make_optimizer({"lr": 0.1}, params), 1, 1)


def test_cpu_threads_follow_the_trial_cpus():
    before = torch.get_num_threads()
    try:
        assert setup_device(cpus=1, gpu_fraction=0) == CPU and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# The CUDA branches of setup_device (memory cap, device index, precision) are in tests/test_gpu.py, with only
# torch._C faked.


def test_lenet5_trains_at_the_stored_image_size(tmp_path):
    """--image-size 48 on lenet5: fit sizes the net from the arrays (its classifier input depends on the side)."""
    from sample_data import write_image_folder

    from image_data.cache import load_dataset

    data = load_dataset(write_image_folder(tmp_path / "f", n_train=6, n_test=2), image_size=48).search_arrays()
    assert data["x_train"].shape[-1] == 48
    _, reports, _ = run({**BASE, "max_epochs": 1}, data)
    assert len(reports) == 1 and not reports[0][M.DIVERGED]
