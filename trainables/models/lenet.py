"""LeNet-5 as in the original write-up: conv 6@5x5, pool, conv 16@5x5, pool, FC 120, FC 84, FC classes."""

from torch import nn


def lenet5(num_classes: int = 10, dropout: float = 0.2, input_size: int = 32) -> nn.Sequential:
    """62,006 parameters for 10 classes and 3x32x32 input. `dropout` follows each hidden FC layer."""
    side = ((input_size - 4) // 2 - 4) // 2  # two valid 5x5 convs, each followed by a 2x2 max-pool: 32 -> 5
    return nn.Sequential(
        nn.Conv2d(3, 6, kernel_size=5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, kernel_size=5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(120, 84),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(84, num_classes),
    )
