"""Ready-made branch cohorts: one network's lower stages as a shared trunk,
its upper stages as K branches, for `MutualLearningModel(branches,
trunk=trunk)`.

ONE (Lan et al., NeurIPS 2018), OKDDip (Chen et al., AAAI 2020) and PCL (Wu
& Gong, AAAI 2021) build their cohorts so on CIFAR: a ResNet whose last
stage is copied per branch. Any backbone works the same way: the trunk is a
Keras model with one `Input`, each branch a model taking the trunk's output
and returning logits (or a dict with "logits").
"""

import keras
from keras import layers

from keras_dml.checks import check_number
from keras_dml.models import common, reid, resnet_cifar


def resnet_depth(name):
    """The depth of CIFAR ResNet peer `name` ("resnet32": 32), else None."""
    if name.startswith("resnet") and name[len("resnet") :].isdigit():
        return int(name[len("resnet") :])
    return None


def _check_branches(num_branches):
    check_number("`num_branches`", num_branches, 1, integer=True)


def resnet_cifar_branches(
    num_branches=3,
    depth=32,
    num_classes=100,
    branch_stages=1,
    input_shape=common.CIFAR_INPUT_SHAPE,
    synchronized_batchnorm=False,
    name=None,
):
    """A CIFAR ResNet (`keras_dml.models.ResNetCIFAR`) split into a trunk and
    `num_branches` branches, as ONE's and PCL's CIFAR cohorts: the stem and
    the first `3 - branch_stages` stages are shared, each branch has its own
    last `branch_stages` stages, pooling and classifier. Trunk + branch is
    the whole ResNet of `depth`, layer for layer.

    Args:
        num_branches: K, the number of peers.
        depth: 6n + 2, as `ResNetCIFAR`.
        branch_stages: how many of the three stages each branch owns (1, as
            ONE: only the 64-filter stage; 0: the branches are classifiers
            on shared features).

    Returns:
        `(trunk, branches)`: a functional model from images to the shared
        features, and a list of K functional models from those features to
        logits.

    Example:

    ```python
    trunk, branches = keras_dml.models.resnet_cifar_branches(3, depth=32)
    model = keras_dml.MutualLearningModel(branches, trunk=trunk)
    ```
    """
    _check_branches(num_branches)
    check_number("`branch_stages`", branch_stages, 0, 3, integer=True)
    if (
        isinstance(depth, bool)
        or not isinstance(depth, int)
        or depth < 8
        or (depth - 2) % 6
    ):
        raise ValueError(f"`depth` must be 6n+2 with n >= 1. Received: depth={depth!r}")
    common.check_num_classes(num_classes)
    blocks = (depth - 2) // 6
    sync = synchronized_batchnorm
    name = name or common.unique_name(f"resnet{depth}")
    shared = tuple(range(1, 4 - branch_stages))
    owned = tuple(range(4 - branch_stages, 4))

    images = keras.Input(shape=input_shape, name="images")
    features = resnet_cifar.stages(
        resnet_cifar.stem(images, sync), blocks, shared, sync
    )
    trunk = keras.Model(images, features, name=name)
    branches = []
    for i in range(num_branches):
        inputs = keras.Input(shape=features.shape[1:], name="features")
        x = resnet_cifar.stages(inputs, blocks, owned, sync)
        branches.append(
            keras.Model(inputs, resnet_cifar.head(x, num_classes), name=f"branch{i}")
        )
    return trunk, branches


def reid_branches(
    num_branches=2,
    backbone="mobilenet",
    num_classes=751,
    input_shape=reid.REID_INPUT_SHAPE,
    weights=None,
    embedding_size=512,
    dropout=0.0,
    synchronized_batchnorm=False,
    name=None,
):
    """A re-ID branch cohort: one `keras.applications` backbone (MobileNet v1
    or ResNet-50, as `keras_dml.models.ReIDNet`) as the trunk, and per branch
    an embedding layer of its own (dense, BatchNorm, ReLU: the branch's
    re-ID feature), dropout and an identity classifier.

    Each branch returns {"logits", "embedding"}, so trunk + branch ranks a
    gallery as any re-ID peer does. The trunk takes images normalized with
    the ImageNet mean and std, as `ReIDNet` ("imagenet" normalization).

    Returns:
        `(trunk, branches)`.
    """
    _check_branches(num_branches)
    check_number("`embedding_size`", embedding_size, 1, integer=True)
    common.check_dropout(dropout)
    common.check_num_classes(num_classes)
    if backbone not in reid.BACKBONES:
        raise ValueError(
            f"`backbone` must be one of {tuple(reid.BACKBONES)}. Received: "
            f"backbone={backbone!r}"
        )
    name = name or common.unique_name(f"reid_{backbone}")
    images = keras.Input(shape=input_shape, name="images")
    mode = reid.BACKBONES[backbone][1]
    x = reid.BackboneInput(mode, name=f"{mode}_input")(images)
    features = reid.build_backbone(
        backbone, tuple(input_shape), weights, name, synchronized_batchnorm
    )(x)
    trunk = keras.Model(images, features, name=name)
    branches = []
    for i in range(num_branches):
        inputs = keras.Input(shape=features.shape[1:], name="features")
        x = layers.Dense(embedding_size, use_bias=False, name="embedding_dense")(inputs)
        x = common.batch_norm(synchronized_batchnorm, "embedding_bn")(x)
        x = layers.ReLU(name="embedding_relu")(x)
        embedding = layers.Activation("linear", dtype="float32", name="embedding")(x)
        x = layers.Dropout(dropout, name="dropout")(embedding) if dropout else embedding
        logits = common.classifier(num_classes)(x)
        branches.append(
            keras.Model(
                inputs, {"logits": logits, "embedding": embedding}, name=f"branch{i}"
            )
        )
    return trunk, branches
