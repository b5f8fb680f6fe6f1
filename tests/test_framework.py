"""The torch/Keras seam (trainables/framework.py) and the one model registry behind it."""

import numpy as np
import pytest

from trainables import metric_names as M
from trainables.framework import Framework, KerasFramework, TorchFramework, framework_of, get_framework
from trainables.models import MODELS, ModelSpec


@pytest.mark.parametrize("cls", [TorchFramework, KerasFramework])
def test_both_implementations_meet_the_protocol(cls):
    assert isinstance(cls(), Framework)  # every method and attribute the protocol names


def test_every_registered_model_has_a_framework_and_a_space():
    from search_spaces import get_max_epochs, get_space

    for name, spec in MODELS.items():
        assert framework_of(name).name == spec.framework
        space, defaults = get_space(name)
        assert set(defaults) <= set(space) and get_max_epochs(name) >= 1


def test_unknown_framework_is_one_line():
    with pytest.raises(ValueError, match="unknown framework 'jax'; known: torch, keras"):
        get_framework("jax")


def test_a_model_registered_in_one_place_trains_and_predicts_probabilities(tiny_arrays, monkeypatch):
    """One MODELS entry (builder, framework, space) is all a new model needs: its space, its trial loop and the
    report's predict all find it. predict returns probabilities for torch as for Keras."""
    from search_spaces import get_space

    monkeypatch.setitem(MODELS, "my_lenet", ModelSpec("lenet:lenet5", "torch", "lenet5", "a test's new model"))
    assert get_space("my_lenet") == get_space("lenet5")
    fw = framework_of("my_lenet")
    fw.setup_local("cpu")
    config = dict(model="my_lenet", lr=1e-2, batch_size=16, max_epochs=1, optimizer="sgd", schedule="constant",
                  weight_decay=0.0, flip=False, crop_padding=0, cutout=0, dropout=0.0, seed=0)  # fmt: skip
    reports = []
    model = fw.fit(config, tiny_arrays, lambda r, state: reports.append(r))
    assert [r[M.EPOCH] for r in reports] == [1] and set(reports[0]) == set(M.REPORT_KEYS)
    p = fw.predict(model, tiny_arrays["x_val"], tiny_arrays, config)
    assert p.shape == (len(tiny_arrays["x_val"]), len(tiny_arrays["classes"]))
    assert np.allclose(p.sum(1), 1, atol=1e-5) and (p >= 0).all()
