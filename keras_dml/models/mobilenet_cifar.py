"""MobileNet v1 (Howard et al., 2017) adapted to 32x32 CIFAR images."""

import keras
from keras import layers

from keras_dml.checks import check_number
from keras_dml.models import common

# (filters, stride) of the 13 depthwise-separable blocks of MobileNet v1. On
# 32x32 inputs the stem and the first stride-2 block keep stride 1, so the
# last feature map is 2x2 instead of collapsing to 1x1.
_BLOCKS = (
    (64, 1),
    (128, 1),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


@keras.saving.register_keras_serializable(package="keras_dml")
class MobileNetCIFAR(common.PeerNetwork):
    """MobileNet v1 (width multiplier alpha) for 32x32 images.

    The ImageNet layer sequence (a 3x3 convolution with 32 filters, 13
    depthwise-separable blocks up to 1024 channels, global average pooling,
    a dense classifier) with strides reduced for 32x32 inputs: the stem and
    the first stride-2 block use stride 1 (the last map is 2x2).

    With alpha=1 and 100 classes it has 3,315,428 parameters: the DML paper's
    "MobileNet 3.3M".

    Args:
        num_classes: number of classes of the logits.
        alpha: width multiplier.
        dropout: dropout rate before the classifier.
        input_shape: image shape, (32, 32, 3) for CIFAR.
        synchronized_batchnorm: synchronize BatchNorm statistics across replicas.
        name: model name (default: unique "mobilenet").

    Reference:
        Howard et al. "MobileNets: Efficient Convolutional Neural Networks for
        Mobile Vision Applications". 2017. https://arxiv.org/abs/1704.04861
    """

    CONFIG_ARGUMENTS = ("alpha", "dropout", "synchronized_batchnorm")

    def __init__(
        self,
        num_classes=100,
        alpha=1.0,
        dropout=0.0,
        input_shape=common.CIFAR_INPUT_SHAPE,
        synchronized_batchnorm=False,
        name=None,
        **kwargs,
    ):
        common.check_num_classes(num_classes)
        check_number("`alpha`", alpha, 0, low_open=True)
        common.check_dropout(dropout)
        sync = synchronized_batchnorm

        inputs = keras.Input(shape=input_shape, name="images")
        x = common.conv(int(32 * alpha), 3, name="stem_conv")(inputs)
        x = common.batch_norm(sync, "stem_bn")(x)
        x = layers.ReLU(name="stem_relu")(x)
        for i, (filters, strides) in enumerate(_BLOCKS):
            name_i = f"block{i + 1}"
            x = layers.DepthwiseConv2D(
                3, strides, padding="same", use_bias=False, name=f"{name_i}_dw_conv"
            )(x)
            x = common.batch_norm(sync, f"{name_i}_dw_bn")(x)
            x = layers.ReLU(name=f"{name_i}_dw_relu")(x)
            x = common.conv(int(filters * alpha), 1, name=f"{name_i}_pw_conv")(x)
            x = common.batch_norm(sync, f"{name_i}_pw_bn")(x)
            x = layers.ReLU(name=f"{name_i}_pw_relu")(x)
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout:
            x = layers.Dropout(dropout, name="dropout")(x)
        outputs = common.classifier(num_classes)(x)
        super().__init__(
            inputs=inputs,
            outputs=outputs,
            name=name or common.unique_name("mobilenet"),
            **kwargs,
        )
        self.num_classes = num_classes
        self.alpha = alpha
        self.dropout = dropout
        self.image_shape = tuple(input_shape)
        self.synchronized_batchnorm = synchronized_batchnorm


def mobilenet_cifar(num_classes=100, **kwargs):
    """MobileNet v1 for CIFAR (3.3M parameters at 100 classes). See `MobileNetCIFAR`."""
    return MobileNetCIFAR(num_classes=num_classes, **kwargs)
