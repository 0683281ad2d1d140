"""ResNet for CIFAR (He et al., 2016, section 4.2): 6n+2 layers, 16/32/64 filters."""

import keras
import numpy as np
from keras import layers, ops

from keras_dml.models import common


@keras.saving.register_keras_serializable(package="keras_dml")
class ResNetCIFAR(common.PeerNetwork):
    """The CIFAR ResNet of He et al. (2016): depth = 6n + 2.

    A 3x3 convolution with 16 filters, three stages of n basic blocks with
    16, 32 and 64 filters (stride 2 at the start of stages 2 and 3), global
    average pooling and a dense classifier. Where the shape changes, the
    shortcut subsamples and zero-pads the channels (option A of the paper,
    the one it uses on CIFAR: the shortcuts have no parameters).

    With depth=32 and 100 classes this has 472,276 parameters (470,004
    trainable; 466,426 at 10 classes, He et al.'s "0.46M"), 2.7% above the
    DML paper's "ResNet-32 0.46M", which is the 10-class figure.

    Args:
        depth: 6n + 2 (20, 32, 44, 56, 110, ...).
        num_classes: number of classes of the logits.
        input_shape: image shape, (32, 32, 3) for CIFAR.
        synchronized_batchnorm: synchronize BatchNorm statistics across the
            replicas of a distribution strategy.
        name: model name (default: unique "resnet{depth}").

    Example:

    ```python
    peer = keras_dml.models.ResNetCIFAR(depth=32, num_classes=100)
    logits = peer(images)  # [batch, 100]
    ```

    Reference:
        He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition".
        CVPR 2016. https://arxiv.org/abs/1512.03385
    """

    CONFIG_ARGUMENTS = ("depth", "synchronized_batchnorm")

    def __init__(
        self,
        depth=32,
        num_classes=100,
        input_shape=common.CIFAR_INPUT_SHAPE,
        synchronized_batchnorm=False,
        name=None,
        **kwargs,
    ):
        if (
            isinstance(depth, bool)
            or not isinstance(depth, int)
            or depth < 8
            or (depth - 2) % 6
        ):
            raise ValueError(
                f"`depth` must be 6n+2 with n >= 1. Received: depth={depth!r}"
            )
        common.check_num_classes(num_classes)
        blocks_per_stage = (depth - 2) // 6
        sync = synchronized_batchnorm

        inputs = keras.Input(shape=input_shape, name="images")
        x = stem(inputs, sync)
        x = stages(x, blocks_per_stage, (1, 2, 3), sync)
        outputs = head(x, num_classes)
        super().__init__(
            inputs=inputs,
            outputs=outputs,
            name=name or common.unique_name(f"resnet{depth}"),
            **kwargs,
        )
        self.depth = depth
        self.num_classes = num_classes
        self.image_shape = tuple(input_shape)
        self.synchronized_batchnorm = synchronized_batchnorm


@keras.saving.register_keras_serializable(package="keras_dml")
class ZeroPadShortcut(layers.Layer):
    """Identity shortcut across a stage change: subsample, zero-pad channels.

    On TensorFlow the two steps are one 1x1 convolution with stride
    `strides` whose kernel copies input channel i to output channel
    `pad + i`: TensorFlow's strided slice (and its gradient) is a generic,
    slow kernel, and this took 3.5% off a ResNet-32 DML step on a CPU
    (BENCHMARKS.md). The result is the same bit for bit: each output is one
    input times 1.0 plus zeros (an infinite input would give NaN in the
    padded channels instead of 0, but then the loss is already infinite).
    Other backends slice, which costs them nothing.
    """

    def __init__(self, filters, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides

    def call(self, x):
        channels = x.shape[-1]
        extra = self.filters - channels
        before = extra // 2
        if keras.backend.backend() == "tensorflow" and extra >= 0:
            kernel = ops.convert_to_tensor(
                shortcut_kernel(channels, self.filters), dtype=x.dtype
            )
            return ops.conv(x, kernel, strides=self.strides, padding="valid")
        x = x[:, :: self.strides, :: self.strides, :]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [before, extra - before]])

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        shrink = lambda n: None if n is None else -(-n // self.strides)  # noqa: E731
        return (batch, shrink(height), shrink(width), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
        }


def shortcut_kernel(channels, filters):
    """The 1x1 convolution kernel `[1, 1, channels, filters]` that copies
    input channel i to output channel `(filters - channels) // 2 + i`."""
    before = (filters - channels) // 2
    kernel = np.zeros((1, 1, channels, filters), "float32")
    kernel[0, 0, np.arange(channels), before + np.arange(channels)] = 1.0
    return kernel


STAGE_FILTERS = {1: 16, 2: 32, 3: 64}


def stem(images, sync):
    """The 3x3 convolution with 16 filters, BatchNorm and ReLU."""
    x = common.conv(16, 3, name="stem_conv")(images)
    x = common.batch_norm(sync, "stem_bn")(x)
    return layers.ReLU(name="stem_relu")(x)


def stages(x, blocks_per_stage, numbers, sync, prefix=""):
    """Stages `numbers` (of 1, 2, 3) of n basic blocks each; the first block
    of stages 2 and 3 halves the resolution."""
    for stage in numbers:
        for block in range(blocks_per_stage):
            strides = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(
                x,
                STAGE_FILTERS[stage],
                strides,
                sync,
                f"{prefix}stage{stage}_block{block + 1}",
            )
    return x


def head(x, num_classes, prefix=""):
    """Global average pooling and the dense classifier (logits)."""
    x = layers.GlobalAveragePooling2D(name=f"{prefix}avg_pool")(x)
    return common.classifier(num_classes, name=f"{prefix}logits")(x)


def _basic_block(x, filters, strides, sync, name):
    shortcut = x
    y = common.conv(filters, 3, strides, name=f"{name}_conv1")(x)
    y = common.batch_norm(sync, f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = common.conv(filters, 3, name=f"{name}_conv2")(y)
    y = common.batch_norm(sync, f"{name}_bn2")(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = ZeroPadShortcut(filters, strides, name=f"{name}_shortcut")(x)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet32(num_classes=100, **kwargs):
    """ResNet-32 for CIFAR (0.47M parameters at 100 classes). See `ResNetCIFAR`."""
    return ResNetCIFAR(depth=32, num_classes=num_classes, **kwargs)


def resnet8(num_classes=100, **kwargs):
    """ResNet-8 (82K parameters at 100 classes): a tiny peer for quick runs."""
    return ResNetCIFAR(depth=8, num_classes=num_classes, **kwargs)


def resnet20(num_classes=100, **kwargs):
    """ResNet-20 for CIFAR. See `ResNetCIFAR`."""
    return ResNetCIFAR(depth=20, num_classes=num_classes, **kwargs)


def resnet56(num_classes=100, **kwargs):
    """ResNet-56 for CIFAR. See `ResNetCIFAR`."""
    return ResNetCIFAR(depth=56, num_classes=num_classes, **kwargs)


def resnet110(num_classes=100, **kwargs):
    """ResNet-110 for CIFAR. See `ResNetCIFAR`."""
    return ResNetCIFAR(depth=110, num_classes=num_classes, **kwargs)
