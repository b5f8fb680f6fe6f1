"""timm:NAME:pretrained: resnet18_pretrained's fine-tuning recipe (search_spaces/resnet18_pretrained.py: the reasons
for each range), with `resolution` chosen from the sides up to the architecture's own input size (its
pretrained_cfg), which is also the first trial's."""

from ray import tune

from .resnet18_pretrained import DEFAULTS, MAX_EPOCHS, SPACE  # noqa: F401

SMALLER_SIDES = (64, 96, 128, 160)  # cheaper than the weights' own size, as resnet18_pretrained searches them


def adapt(space: dict, defaults: dict, model: str) -> None:
    """Resolutions for `model` (timm:NAME:pretrained): the smaller sides below its input size, and its input size."""
    from trainables.models.timm_models import native_side, parse

    native = native_side(parse(model)[0])
    space["resolution"] = tune.choice(sorted({s for s in SMALLER_SIDES if s < native} | {native}))
    defaults["resolution"] = native
