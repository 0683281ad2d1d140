"""Wide residual networks (Zagoruyko & Komodakis, 2016) for CIFAR."""

import keras
from keras import layers

from keras_dml.checks import check_number
from keras_dml.models import common


@keras.saving.register_keras_serializable(package="keras_dml")
class WideResNet(common.PeerNetwork):
    """WRN-depth-width: pre-activation residual network of depth 6n+4.

    A 3x3 convolution with 16 filters, three groups of n pre-activation
    blocks (BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3) with 16k, 32k and 64k
    filters (stride 2 at the start of groups 2 and 3; a 1x1 convolution on the
    shortcut where the shape changes), BN-ReLU, global average pooling, dense.

    WRN-28-10 at 100 classes has 36,546,980 parameters: the DML paper's 36.5M.

    Args:
        depth: 6n + 4 (16, 22, 28, 40, ...).
        width: widening factor k.
        num_classes: number of classes of the logits.
        dropout: dropout rate between the two convolutions of a block (the
            WRN paper uses 0.3 on CIFAR; the DML paper does not say).
        input_shape: image shape, (32, 32, 3) for CIFAR.
        synchronized_batchnorm: synchronize BatchNorm statistics across replicas.
        name: model name (default: unique "wrn{depth}_{width}").

    Reference:
        Zagoruyko, Komodakis. "Wide Residual Networks". BMVC 2016.
        https://arxiv.org/abs/1605.07146
    """

    CONFIG_ARGUMENTS = ("depth", "width", "dropout", "synchronized_batchnorm")

    def __init__(
        self,
        depth=28,
        width=10,
        num_classes=100,
        dropout=0.0,
        input_shape=common.CIFAR_INPUT_SHAPE,
        synchronized_batchnorm=False,
        name=None,
        **kwargs,
    ):
        if (
            isinstance(depth, bool)
            or not isinstance(depth, int)
            or depth < 10
            or (depth - 4) % 6
        ):
            raise ValueError(
                f"`depth` must be 6n+4 with n >= 1. Received: depth={depth!r}"
            )
        check_number("`width`", width, 1, integer=True)
        common.check_dropout(dropout)
        common.check_num_classes(num_classes)
        blocks_per_group = (depth - 4) // 6
        sync = synchronized_batchnorm

        inputs = keras.Input(shape=input_shape, name="images")
        x = common.conv(16, 3, name="stem_conv")(inputs)
        for group, filters in enumerate((16 * width, 32 * width, 64 * width)):
            for block in range(blocks_per_group):
                strides = 2 if group > 0 and block == 0 else 1
                x = _wide_block(
                    x,
                    filters,
                    strides,
                    dropout,
                    sync,
                    f"group{group + 1}_block{block + 1}",
                )
        x = common.batch_norm(sync, "final_bn")(x)
        x = layers.ReLU(name="final_relu")(x)
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        outputs = common.classifier(num_classes)(x)
        super().__init__(
            inputs=inputs,
            outputs=outputs,
            name=name or common.unique_name(f"wrn{depth}_{width}"),
            **kwargs,
        )
        self.depth = depth
        self.width = width
        self.num_classes = num_classes
        self.dropout = dropout
        self.image_shape = tuple(input_shape)
        self.synchronized_batchnorm = synchronized_batchnorm


def _wide_block(x, filters, strides, dropout, sync, name):
    preactivated = common.batch_norm(sync, f"{name}_bn1")(x)
    preactivated = layers.ReLU(name=f"{name}_relu1")(preactivated)
    if strides != 1 or x.shape[-1] != filters:
        # The projection reads the pre-activated input, as in the WRN code.
        shortcut = common.conv(filters, 1, strides, name=f"{name}_shortcut_conv")(
            preactivated
        )
    else:
        shortcut = x
    y = common.conv(filters, 3, strides, name=f"{name}_conv1")(preactivated)
    y = common.batch_norm(sync, f"{name}_bn2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = common.conv(filters, 3, name=f"{name}_conv2")(y)
    return layers.Add(name=f"{name}_add")([y, shortcut])


def wide_resnet(num_classes=100, depth=28, width=10, **kwargs):
    """WRN-28-10 by default (36.5M parameters at 100 classes). See `WideResNet`."""
    return WideResNet(depth=depth, width=width, num_classes=num_classes, **kwargs)
