"""The training loop without Ray: metric keys, exact resume from a checkpoint, divergence, CPU device set-up."""

import copy

import pytest
import torch

from trainables import metrics as M
from trainables.torch_trainable import (
    OPTIMIZERS,
    SCHEDULES,
    fit,
    load_checkpoint,
    make_optimizer,
    make_scheduler,
    save_checkpoint,
    setup_device,
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
    model_full, reports_full, states = run(BASE, tiny_arrays)
    save_checkpoint(states[0], str(tmp_path))  # as if the trial died after epoch 1
    model_resumed, reports_resumed, _ = run(BASE, tiny_arrays, checkpoint=load_checkpoint(str(tmp_path)))
    assert [r[M.EPOCH] for r in reports_resumed] == [2, 3]
    assert reports_resumed[-1][M.TRAIN_LOSS] == pytest.approx(reports_full[-1][M.TRAIN_LOSS], rel=1e-5)
    for a, b in zip(model_full.state_dict().values(), model_resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_diverging_trial_reports_and_stops(tiny_arrays):
    _, reports, _ = run({**BASE, "lr": 1e6, "label_smoothing": 0.0, "optimizer": "sgd", "schedule": "constant"},
                        tiny_arrays)  # fmt: skip
    assert len(reports) == 1
    assert reports[0][M.DIVERGED] and reports[0][M.VAL_LOSS] == float("inf") and reports[0][M.VAL_ACC] == 0.0


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
