"""ResNet-18 from torchvision's own blocks (BasicBlock, [2, 2, 2, 2]), with a CIFAR or an ImageNet stem."""

from torch import nn
from torchvision.models import resnet18 as tv_resnet18

STEMS = ("cifar", "imagenet")


def resnet18(num_classes: int = 10, stem: str = "cifar") -> nn.Module:
    """`stem="cifar"`: 3x3 stride-1 conv, no max-pool (keeps 32x32 inputs at 32x32 into layer1, 11.17M params);
    `stem="imagenet"`: torchvision's 7x7 stride-2 conv + BN + max-pool, as the original project trained it."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; known: {', '.join(STEMS)}")
    model = tv_resnet18(weights=None, num_classes=num_classes)
    if stem == "cifar":
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model
