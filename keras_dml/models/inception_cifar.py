"""InceptionV1 (GoogLeNet, Szegedy et al., 2015) adapted to 32x32 CIFAR images."""

import keras
from keras import layers

from keras_dml.models import common

# Inception modules of GoogLeNet (Table 1 of the paper): 1x1 filters,
# 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection. "pool" is a 3x3
# stride-2 max pooling between stages.
_MODULES = (
    ("3a", (64, 96, 128, 16, 32, 32)),
    ("3b", (128, 128, 192, 32, 96, 64)),
    "pool",
    ("4a", (192, 96, 208, 16, 48, 64)),
    ("4b", (160, 112, 224, 24, 64, 64)),
    ("4c", (128, 128, 256, 24, 64, 64)),
    ("4d", (112, 144, 288, 32, 64, 64)),
    ("4e", (256, 160, 320, 32, 128, 128)),
    "pool",
    ("5a", (256, 160, 320, 32, 128, 128)),
    ("5b", (384, 192, 384, 48, 128, 128)),
)
# GoogLeNet's auxiliary classifiers sit on the outputs of 4a and 4d.
_AUX_AFTER = ("4a", "4d")


@keras.saving.register_keras_serializable(package="keras_dml")
class InceptionV1CIFAR(common.PeerNetwork):
    """InceptionV1 (GoogLeNet) for 32x32 images, with BatchNorm.

    A 3x3 convolution with 192 filters replaces the ImageNet stem (which would
    shrink 32x32 inputs to 4x4 before the first module); then the nine
    inception modules of GoogLeNet with two max-poolings (32 -> 16 -> 8),
    global average pooling, dropout and a dense classifier. As in the widely
    used CIFAR port, the "5x5" branch is two stacked 3x3 convolutions, and every
    convolution is followed by BatchNorm and ReLU.

    With `aux_classifiers=True` (default) the model also has GoogLeNet's two
    auxiliary classifiers (after modules 4a and 4d: average pooling to 2x2,
    1x1 convolution with 128 filters, dense 1024 with ReLU and 70% dropout,
    dense classifier) and returns `{"logits": ..., "aux_logits": [a, b]}`;
    `MutualLearningModel` trains them with cross-entropy only (weight
    `aux_loss_weight`). At 100 classes that is 7,656,172 parameters, 1.8%
    below the DML paper's "InceptionV1 7.8M" (the paper does not describe its
    variant; no variant without auxiliary classifiers comes near: this one
    without them has 6,266,404).

    Args:
        num_classes: number of classes of the logits.
        aux_classifiers: add GoogLeNet's two auxiliary classifiers.
        dropout: dropout rate before the classifier (0.4 in GoogLeNet).
        input_shape: image shape, (32, 32, 3) for CIFAR.
        synchronized_batchnorm: synchronize BatchNorm statistics across replicas.
        name: model name (default: unique "inception_v1").

    Reference:
        Szegedy et al. "Going Deeper with Convolutions". CVPR 2015.
        https://arxiv.org/abs/1409.4842
    """

    CONFIG_ARGUMENTS = ("aux_classifiers", "dropout", "synchronized_batchnorm")

    def __init__(
        self,
        num_classes=100,
        aux_classifiers=True,
        dropout=0.4,
        input_shape=common.CIFAR_INPUT_SHAPE,
        synchronized_batchnorm=False,
        name=None,
        **kwargs,
    ):
        common.check_num_classes(num_classes)
        common.check_dropout(dropout)
        sync = synchronized_batchnorm

        inputs = keras.Input(shape=input_shape, name="images")
        x = _conv_bn_relu(inputs, 192, 3, sync, "stem")
        aux_logits = []
        for i, module in enumerate(_MODULES):
            if module == "pool":
                x = layers.MaxPooling2D(3, 2, padding="same", name=f"pool{i}")(x)
                continue
            module_name, filters = module
            x = _inception_module(x, filters, sync, f"inception_{module_name}")
            if aux_classifiers and module_name in _AUX_AFTER:
                aux_logits.append(
                    _aux_classifier(x, num_classes, sync, f"aux_{module_name}")
                )
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout:
            x = layers.Dropout(dropout, name="dropout")(x)
        logits = common.classifier(num_classes)(x)
        outputs = {"logits": logits, "aux_logits": aux_logits} if aux_logits else logits
        super().__init__(
            inputs=inputs,
            outputs=outputs,
            name=name or common.unique_name("inception_v1"),
            **kwargs,
        )
        self.num_classes = num_classes
        self.aux_classifiers = aux_classifiers
        self.dropout = dropout
        self.image_shape = tuple(input_shape)
        self.synchronized_batchnorm = synchronized_batchnorm


def _conv_bn_relu(x, filters, kernel_size, sync, name):
    x = common.conv(filters, kernel_size, name=f"{name}_conv")(x)
    x = common.batch_norm(sync, f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _inception_module(x, filters, sync, name):
    f1, f3_reduce, f3, f5_reduce, f5, pool_proj = filters
    branch1 = _conv_bn_relu(x, f1, 1, sync, f"{name}_1x1")
    branch3 = _conv_bn_relu(x, f3_reduce, 1, sync, f"{name}_3x3_reduce")
    branch3 = _conv_bn_relu(branch3, f3, 3, sync, f"{name}_3x3")
    branch5 = _conv_bn_relu(x, f5_reduce, 1, sync, f"{name}_5x5_reduce")
    branch5 = _conv_bn_relu(branch5, f5, 3, sync, f"{name}_5x5_a")
    branch5 = _conv_bn_relu(branch5, f5, 3, sync, f"{name}_5x5_b")
    pool = layers.MaxPooling2D(3, 1, padding="same", name=f"{name}_pool")(x)
    pool = _conv_bn_relu(pool, pool_proj, 1, sync, f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([branch1, branch3, branch5, pool])


def _aux_classifier(x, num_classes, sync, name):
    # GoogLeNet pools its 14x14 maps to 4x4 here; on the 16x16 maps of a
    # 32x32 input we pool to 2x2 (a 4x4 map would make each head's dense
    # layer 2.1M parameters, a third of the whole network).
    window = max(1, x.shape[1] // 2)
    x = layers.AveragePooling2D(window, window, name=f"{name}_pool")(x)
    x = _conv_bn_relu(x, 128, 1, sync, f"{name}_proj")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return common.classifier(num_classes, name=f"{name}_logits")(x)


def inception_v1_cifar(num_classes=100, **kwargs):
    """InceptionV1 for CIFAR (7.66M parameters at 100 classes).

    See `InceptionV1CIFAR`.
    """
    return InceptionV1CIFAR(num_classes=num_classes, **kwargs)
