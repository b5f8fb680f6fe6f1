"""Keras ResNet-18: the shared keys with Keras meanings, the original recipe's shift, and the stem."""

from .common import COMMON, COMMON_DEFAULTS
from .ranges import tune

# Every trial's schedule horizon and ASHA's max_t (--max-epochs overrides): 20 epochs reach most of what this net gets on CIFAR-10 within a CPU-or-one-GPU search.
MAX_EPOCHS = 20

SPACE = {
    **COMMON,
    # Keras decays weights decoupled for every optimizer, so "adamw" would repeat "adam"; Nesterov SGD wants ~10x
    # Adam's lr, hence the wider lr range (multivariate TPE learns the optimizer x lr interaction).
    "optimizer": tune.choice(["adam", "sgd"]),
    "lr": tune.loguniform(3e-4, 1e-1),
    # Decoupled decay (w -= lr * wd * w): ~5e-4 is the usual SGD value, Adam tolerates more; above ~5e-3 SGD shrinks
    # the weights faster than it learns.
    "weight_decay": tune.loguniform(1e-5, 5e-3),
    # The original's width/height shift (edges repeated), as a fraction of the image side; crop_padding is the torch
    # search's zero-filled shift. Both stay, TPE finds which translation (if either) helps.
    "shift": tune.choice([0.0, 0.05, 0.1]),
    "cutout": tune.choice([0, 8, 16]),
    # "imagenet": the original's 7x7 stride 2 + max-pool; "cifar": 3x3 stride 1, no pool, usually more accurate on
    # 32x32 images but about 10x slower (docs/models.md).
    "stem": tune.choice(["imagenet", "cifar"]),
    # The original's constant lr (DEFAULTS) or cosine over the trial's epochs: both stay near the peak lr through the
    # first rungs, so ASHA compares them fairly (common.py says why onecycle and step are not searched).
    "schedule": tune.choice(["constant", "cosine"]),
}

# The first trial is the original Keras recipe: Adam at Keras' default lr 1e-3, constant, flips and 0.05 shifts,
# the 7x7 stem; weight decay and batch size as the other searches start.
DEFAULTS = {
    **COMMON_DEFAULTS,
    "schedule": "constant",
    "crop_padding": 0,
    "shift": 0.05,
    "stem": "imagenet",
}
