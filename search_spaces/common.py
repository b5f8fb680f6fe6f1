"""Keys every model's space shares, torch and Keras alike: optimisation, schedule, regularisation and augmentation.

Ranges are the part of each axis where training works for small CIFAR nets in 10-40 epochs, so the searcher
spends its trials comparing good configs rather than rediscovering divergence. Constants (plain values) are part of
every trial's config and recorded with it; DEFAULTS name searched keys only (Optuna rejects a first point naming
constants).
"""

from .ranges import tune

COMMON = {
    # Adam-family lr: below ~3e-4 a 10-epoch run is still far from converged; above ~1e-2 LeNet/ResNet stall or diverge.
    "lr": tune.loguniform(3e-4, 1e-2),
    # Larger batches are faster per image but generalise a little worse at a fixed epoch budget.
    "batch_size": tune.choice([64, 128, 256]),
    "optimizer": tune.choice(["adam", "adamw"]),
    # L2 (Adam) / decoupled (AdamW) decay; 1e-3 is already strong for nets this small.
    "weight_decay": tune.loguniform(1e-6, 1e-3),
    # One schedule, so that ASHA's rungs compare configs and not schedule phases: onecycle spends its first 30% warming
    # up (its trials sat at val_acc 0.28 after epoch 1 next to 0.5 for cosine, and were stopped there) and step drops
    # the lr 10x at epoch 7 whatever the horizon, so a rung before or after that epoch favours or hides it. Cosine
    # (per batch, over the trial's max_epochs, the same horizon for every trial) is within a few percent of its
    # peak lr for the first ~15% of the epochs, where the first rungs sit, and anneals every trial alike after that.
    # The trainers still know constant/step/onecycle (report.py --epochs, the pretrained and Keras recipes).
    "schedule": "cosine",
    "label_smoothing": tune.uniform(0.0, 0.15),
    # Augmentation (batched on the device): flip, random crop from a zero-padded image, cutout square side.
    "flip": tune.choice([True, False]),
    "crop_padding": tune.choice([0, 2, 4]),
    "cutout": tune.choice([0, 8]),
}

# The first trial of every search: a plain, known-good recipe (Adam 1e-3, the originals' optimizer), so the search
# starts from a sensible baseline and TPE has one good point from the start.
COMMON_DEFAULTS = {
    "lr": 1e-3,
    "batch_size": 128,
    "optimizer": "adam",
    "weight_decay": 1e-5,
    "label_smoothing": 0.0,
    "flip": True,
    "crop_padding": 4,
    "cutout": 0,
}

# The space of a model that brings none of its own: a user's builder file without SPACE (laid under it when it has
# one: trainables/models/user.py), timm:NAME from scratch. 20 epochs: resnet18_pretrained's horizon, a middle ground
# between LeNet-5's 40 and what a 15-minute CPU search brings to the end for a larger net.
SPACE = COMMON
DEFAULTS = COMMON_DEFAULTS
MAX_EPOCHS = 20
