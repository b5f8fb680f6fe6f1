import pytest
import torch

from trainables.models import MODELS, UnknownModelError, build_model

TORCH_MODELS = [name for name, spec in MODELS.items() if spec.framework == "torch"]


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_forward_backward(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_lenet5_is_the_original_net():
    model = build_model("lenet5", num_classes=10)
    assert n_params(model) == 62_006
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(6, (5, 5)), (16, (5, 5))]
    fcs = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [f.out_features for f in fcs] == [120, 84, 10]


def test_lenet5_dropout_is_the_config_value():
    model = build_model("lenet5", num_classes=10, dropout=0.35, lr=0.1, batch_size=64)  # extra keys ignored
    assert [m.p for m in model if isinstance(m, torch.nn.Dropout)] == [0.35, 0.35]


def test_resnet18_stems():
    cifar = build_model("resnet18", num_classes=10, stem="cifar")
    imagenet = build_model("resnet18", num_classes=10, stem="imagenet")
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2) and imagenet.conv1.padding == (3, 3)
    assert isinstance(imagenet.maxpool, torch.nn.MaxPool2d)
    assert n_params(cifar) == 11_173_962  # torchvision BasicBlock [2, 2, 2, 2], 3x3 stem, 10 classes
    assert n_params(imagenet) == 11_181_642


def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError, match="lenet5.*resnet18"):
        build_model("vgg", num_classes=10)


def test_unknown_stem():
    with pytest.raises(ValueError, match="cifar, imagenet"):
        build_model("resnet18", num_classes=10, stem="tiny")
