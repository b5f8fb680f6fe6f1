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

# The first trial: the textbook CIFAR ResNet recipe (Nesterov SGD lr 0.05, L2 5e-4, batch 128, flip + 4-pixel crops,
# cosine; docs/measurements.md). When a budget cannot afford its 3x3 stem, the plan (search_driver/plan.py) starts
# from the same recipe with the 7x7 stem.
DEFAULTS = {**COMMON_DEFAULTS, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "stem": "cifar"}
