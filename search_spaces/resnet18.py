"""ResNet-18 from scratch: the shared keys, SGD added, and the stem."""

from .common import COMMON, COMMON_DEFAULTS
from .ranges import tune

# Every trial's schedule horizon and ASHA's max_t (--max-epochs overrides): 20 epochs reach most of what this net gets on CIFAR-10 within a CPU-or-one-GPU search.
MAX_EPOCHS = 20

SPACE = {
    **COMMON,
    # BatchNorm nets also train well with Nesterov SGD, which wants ~10x Adam's lr: the lr range widens to 1e-1
    # and multivariate TPE learns the optimizer x lr interaction (Adam above ~1e-2 is its bad corner).
    "optimizer": tune.choice(["adam", "adamw", "sgd"]),
    "lr": tune.loguniform(3e-4, 1e-1),
    "weight_decay": tune.loguniform(1e-5, 1e-3),
    # 16x16 cutout is the published CIFAR-10 ResNet setting; 0 keeps it optional.
    "cutout": tune.choice([0, 8, 16]),
    # "cifar": 3x3 stride 1, no max-pool; "imagenet": the original project's 7x7 stride 2 + max-pool (4x cheaper,
    # less accurate on 32x32 inputs).
    "stem": tune.choice(["cifar", "imagenet"]),
}

DEFAULTS = {**COMMON_DEFAULTS, "stem": "cifar"}
