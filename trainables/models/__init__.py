"""The one model registry (timm-style): `build_model(name, num_classes, **config)`. Adding a model is one entry
here, its builder file in this package and its space file in search_spaces/.

Each entry names its builder as "module:function" (imported on first use, so a torch search never imports
TensorFlow and vice versa), its framework (which loop trains it: trainables/framework.py) and its search space
(a module of search_spaces/; several models may share one). A builder takes only the keys it declares;
the rest of a trial config (lr, batch size, ...) is ignored here, so trainables can pass the whole config.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    builder: str  # "module:function", relative to this package
    framework: str  # "torch" or "keras"
    space: str  # module of search_spaces/ holding SPACE, DEFAULTS and MAX_EPOCHS
    description: str

    def load(self):
        module, func = self.builder.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), func)


MODELS: dict[str, ModelSpec] = {
    "lenet5": ModelSpec("lenet:lenet5", "torch", "lenet5", "LeNet-5 (62k params), the original write-up's net"),
    "resnet18": ModelSpec(
        "resnet:resnet18", "torch", "resnet18", "ResNet-18 from scratch, CIFAR 3x3 or ImageNet 7x7 stem"
    ),
    "resnet18_pretrained": ModelSpec(
        "pretrained:resnet18_pretrained",
        "torch",
        "resnet18_pretrained",
        "ResNet-18 with torchvision's ImageNet weights, new head, fine-tuned",
    ),
    # Keras builders also take input_shape (NHWC); the Keras loop passes it next to the config.
    "keras_resnet18": ModelSpec(
        "keras_resnet:keras_resnet18",
        "keras",
        "keras_resnet18",
        "Keras 3 (TensorFlow) ResNet-18, custom Block layer, 7x7 or 3x3 stem",
    ),
}


class UnknownModelError(ValueError):
    pass


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(name: str, num_classes: int, **config):
    """Build `name` with the config keys its builder accepts (e.g. `dropout`, `stem`)."""
    builder = get_spec(name).load()
    accepted = set(inspect.signature(builder).parameters) - {"num_classes"}
    return builder(num_classes=num_classes, **{k: v for k, v in config.items() if k in accepted})
