"""The one model registry (timm-style): `build_model(name, num_classes, **config)`. Adding a model is one entry
here, its builder file in this package and its space file in search_spaces/.

Each entry names its builder as "module:function" (imported on first use, so a torch search never imports
TensorFlow and vice versa), its framework (which loop trains it: trainables/framework.py) and its search space
(a module of search_spaces/; several models may share one). A builder takes only the keys it declares;
the rest of a trial config (lr, batch size, ...) is ignored here, so trainables can pass the whole config.

Models from outside the registry have a spec too, made from the `--model` string itself (trainables/models/user.py):
`path/to/file.py:function`, `package.module:function` (framework detected from what the builder returns) and
`timm:NAME[:pretrained]`. The string is all a trial needs to resolve the model again, in any process, on any node.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .refs import UnknownModelError  # noqa: F401  (re-exported: the error every caller catches)


@dataclass(frozen=True)
class ModelSpec:
    builder: str  # "module:function", relative to this package; a user model: its --model string
    framework: str | None  # "torch" or "keras"; None: a user builder whose model has not been built yet
    space: str  # module of search_spaces/ holding SPACE, DEFAULTS and MAX_EPOCHS ("": the user file's own)
    description: str
    kind: str = "builtin"  # "builtin", or a user model's: "file", "module", "timm" (trainables/models/user.py)

    def load(self):
        if self.kind != "builtin":
            from .user import load_builder

            return load_builder(self.builder)
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


def get_spec(name: str) -> ModelSpec:
    if name in MODELS:
        return MODELS[name]
    from . import user

    if user.kind(name) is None:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(MODELS)}, or your own: path/to/file.py:function, "
            "package.module:function, timm:NAME (docs/own-model.md)"
        )
    return user.spec(name)


def build_model(name: str, num_classes: int, **config):
    """Build `name` with the config keys its builder accepts (e.g. `dropout`, `stem`).

    `input_size` (the side of the square images) and `input_shape` ((side, side, 3), Keras' NHWC) are two names for
    the same thing: a loop passes one, a builder may name either."""
    builder = get_spec(name).load()
    if "input_shape" in config and "input_size" not in config:
        config["input_size"] = int(config["input_shape"][0])
    elif "input_size" in config and "input_shape" not in config:
        config["input_shape"] = (int(config["input_size"]), int(config["input_size"]), 3)
    accepted = set(inspect.signature(builder).parameters) - {"num_classes"}
    return builder(num_classes=num_classes, **{k: v for k, v in config.items() if k in accepted})


def model_slug(name: str) -> str:
    """`name` as a folder-name prefix: a registered name as is, a user model's short form (net-build, timm-resnet10t)."""
    if name in MODELS:
        return name
    from .user import slug

    return slug(name)


def rebuild_recipe(name: str, config: dict, num_classes: int, side: int) -> dict:
    """{"model", "source", "python"}: what builds the architecture of a model trained from `config` (the card's
    "rebuild"): a user's builder file or module and function, a timm name, or this registry."""
    spec = get_spec(name)
    if spec.kind != "builtin":
        from .user import rebuild

        return rebuild(name, config, num_classes, side)
    params = set(inspect.signature(spec.load()).parameters)
    accepted = params - {"num_classes", "weights_path", "load_weights"}
    kwargs = "".join(f", {k}={v!r}" for k, v in config.items() if k in accepted)
    kwargs += ", load_weights=False" if "load_weights" in params else ""  # the trained file has every tensor
    return {
        "model": name,
        "source": f"this repository's registry (trainables/models), {spec.description}",
        "python": f"from trainables.models import build_model\nmodel = build_model({name!r}, num_classes={num_classes}"
        f"{kwargs}, input_size={side})",
    }


def weights_check(model: str) -> Callable[[str | None], Path] | None:
    """The model's `check_weights(path)` if its builder module has one (pretrained models), else None."""
    spec = get_spec(model)
    if spec.kind == "timm":  # timm:NAME:pretrained (trainables/models/timm_models.py)
        from .timm_models import check_weights, parse

        name, pretrained = parse(model)
        return (lambda path: check_weights(name, path)) if pretrained else None
    if spec.kind != "builtin":
        return None
    builder = spec.load()
    return getattr(sys.modules[builder.__module__], "check_weights", None)
