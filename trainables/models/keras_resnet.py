"""ResNet-18 in Keras 3 (TensorFlow backend): a residual `Block` layer and the `keras_resnet18` builder.

The same architecture as the torch `resnet18` (BasicBlock [2, 2, 2, 2], 64/128/256/512 channels, bias-free convs
before BatchNorm), so the trainable parameter counts match torchvision's exactly: 11,173,962 ("cifar" stem) and
11,181,642 ("imagenet" stem) for 10 classes; Keras adds 9,600 non-trainable BatchNorm moving statistics.
"""

from __future__ import annotations

from ..keras_env import keras

layers = keras.layers
STEMS = ("cifar", "imagenet")
STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the first Block), two Blocks per stage


def batch_norm(dtype=None) -> layers.BatchNormalization:
    """torch's BatchNorm2d defaults (momentum 0.1 = Keras 0.9, eps 1e-5). Keras' own 0.99 moves the inference
    statistics so slowly that after the few hundred steps of a short trial validation runs on stale statistics."""
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=dtype)


@keras.saving.register_keras_serializable(package="cifar_tune")
class Block(layers.Layer):
    """Two 3x3 conv + BN (ReLU between and after the sum) and a shortcut: the identity when the input already has
    `filters` channels at this resolution, else a strided 1x1 conv + BN projection (ResNet option B)."""

    def __init__(self, filters: int, stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.stride = int(filters), int(stride)
        # Sub-layers take the Block's dtype policy, not the process's global one: a model trained under
        # mixed_float16 (GPU) and loaded where the global policy is float32 (a CPU machine) would otherwise add a
        # float32 branch to a float16 shortcut and fail (tests/test_gpu.py).
        dtype = self.dtype_policy
        conv = dict(kernel_size=3, padding="same", use_bias=False, kernel_initializer="he_normal", dtype=dtype)
        self.conv1 = layers.Conv2D(self.filters, strides=self.stride, **conv)
        self.bn1 = batch_norm(dtype)
        self.conv2 = layers.Conv2D(self.filters, strides=1, **conv)
        self.bn2 = batch_norm(dtype)
        self.projection = None  # decided in build(), once the input's channel count is known

    def build(self, input_shape):
        if self.stride != 1 or input_shape[-1] != self.filters:
            self.projection = keras.Sequential(
                [
                    layers.Conv2D(
                        self.filters,
                        1,
                        strides=self.stride,
                        use_bias=False,
                        kernel_initializer="he_normal",
                        dtype=self.dtype_policy,
                    ),
                    batch_norm(self.dtype_policy),
                ]
            )
            self.projection.build(input_shape)
        self.conv1.build(input_shape)
        out_shape = self.conv1.compute_output_shape(input_shape)
        self.bn1.build(out_shape)
        self.conv2.build(out_shape)
        self.bn2.build(out_shape)

    def call(self, x, training=None):
        y = keras.ops.relu(self.bn1(self.conv1(x), training=training))
        y = self.bn2(self.conv2(y), training=training)
        shortcut = x if self.projection is None else self.projection(x, training=training)
        return keras.ops.relu(y + shortcut)

    def compute_output_shape(self, input_shape):
        return self.conv1.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride}


def keras_resnet18(input_shape=(32, 32, 3), num_classes: int = 10, stem: str = "imagenet") -> keras.Model:
    """NHWC float input -> softmax probabilities (float32 even under mixed precision).

    `stem="imagenet"` (default, the original project's net): 7x7 stride-2 conv + BN + ReLU + 3x3 stride-2
    max-pool, as torchvision's; `stem="cifar"`: 3x3 stride-1 conv + BN + ReLU, no pool (32x32 stays 32x32 into the
    first stage: ~16x the compute, usually more accurate on CIFAR-sized images).
    """
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; known: {', '.join(STEMS)}")
    inputs = keras.Input(shape=tuple(input_shape))
    if stem == "imagenet":
        x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, kernel_initializer="he_normal")(inputs)
    else:
        x = layers.Conv2D(64, 3, strides=1, padding="same", use_bias=False, kernel_initializer="he_normal")(inputs)
    x = layers.ReLU()(batch_norm()(x))
    if stem == "imagenet":
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for channels, stride in STAGES:
        x = Block(channels, stride)(x)
        x = Block(channels, 1)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(num_classes)(x)
    # The softmax in float32: under mixed_float16 a float16 softmax loses the small probabilities the loss needs.
    outputs = layers.Activation("softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"keras_resnet18_{stem}")
