"""ImageNet-pretrained ResNet-18, fine-tuned: resolution, RandomResizedCrop scale and the fine-tuning strategy.

The original project fine-tuned it at 224x224 with RandomResizedCrop + flip, ImageNet normalisation, Adam 5.59e-4,
StepLR(7, 0.1), batch 256, 20 epochs: that recipe is the first trial (DEFAULTS), and the ranges sit around it.
"""

from .common import COMMON, COMMON_DEFAULTS
from .ranges import tune

# Fixed for this model (constants in the space, so they are recorded in every trial's config).
FIXED = {
    # RandomResizedCrop (crop_scale) replaces the padded crop.
    "crop_padding": 0,
    # Cutout sizes are in pixels of the resized batch, so they would mean different things at each resolution.
    "cutout": 0,
}

# Every trial's schedule horizon and ASHA's max_t (--max-epochs overrides): the original recipe ran 20.
MAX_EPOCHS = 20

SPACE = {
    **COMMON,
    **FIXED,
    # Fine-tuning wants ~10x less than training from scratch (pretrained features are destroyed by large steps):
    # the range is centred (log scale) on the original's 5.59e-4. `--lr-range-from-finder` replaces it.
    "lr": tune.loguniform(5e-5, 5e-3),
    # Stored images are 32x32; each batch is upsampled on the device. 224 is the weights' own crop size (most
    # accurate, ~12x the compute of 64); smaller sides trade accuracy for trials per GPU-hour.
    "resolution": tune.choice([64, 96, 128, 160, 224]),
    # RandomResizedCrop's smallest area fraction replaces the padded crop; 0.08 is torchvision's default (the
    # original's), larger values crop less of a 32-pixel source; 1.0 = always the whole image (plain resize).
    "crop_scale": tune.choice([0.08, 0.25, 0.5, 1.0]),
    # Train only the new head for the first epochs (its random init sends large gradients into the backbone),
    # then everything.
    "freeze_epochs": tune.choice([0, 1, 2]),
    # Backbone lr = lr x this; the head (new, random) learns at the full lr. 1 = one lr for all, as the original.
    "backbone_lr_mult": tune.loguniform(0.03, 1.0),
    # The original StepLR(7, 0.1) or cosine: the first rungs (max_epochs / 8 and 3x that: epochs 2 and 6 of 20) come
    # before step's first drop at epoch 7, so both are compared at their peak lr.
    "schedule": tune.choice(["step", "cosine"]),
}

# The original recipe (see the module docstring); weight decay at the space's floor, as the original had none.
# Only searched keys: Optuna rejects a first point that names constants.
DEFAULTS = {
    **{k: v for k, v in COMMON_DEFAULTS.items() if k not in FIXED},
    "lr": 5.59e-4,
    "batch_size": 256,
    "schedule": "step",
    "weight_decay": 1e-6,
    "resolution": 224,
    "crop_scale": 0.08,
    "freeze_epochs": 0,
    "backbone_lr_mult": 1.0,
}
