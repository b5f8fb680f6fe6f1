"""Keys every torch model's space shares: optimisation, schedule, regularisation and augmentation.

Ranges are the part of each axis where training works for small CIFAR nets in 10-20 epochs, so the searcher
spends its trials comparing good configs rather than rediscovering divergence.
"""

from ray import tune

COMMON = {
    # Adam-family lr: below ~3e-4 a 10-epoch run is still far from converged; above ~1e-2 LeNet/ResNet stall or diverge.
    "lr": tune.loguniform(3e-4, 1e-2),
    # Larger batches are faster per image but generalise a little worse at a fixed epoch budget.
    "batch_size": tune.choice([64, 128, 256]),
    "optimizer": tune.choice(["adam", "adamw"]),
    # L2 (Adam) / decoupled (AdamW) decay; 1e-3 is already strong for nets this small.
    "weight_decay": tune.loguniform(1e-6, 1e-3),
    # step = StepLR(7, 0.1) per epoch, the original pretrained recipe; the others anneal per batch.
    "schedule": tune.choice(["constant", "step", "cosine", "onecycle"]),
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
    "schedule": "cosine",
    "label_smoothing": 0.0,
    "flip": True,
    "crop_padding": 4,
    "cutout": 0,
}
