"""Peer networks: the four CIFAR architectures of the DML paper, other depths
of the CIFAR ResNet, and the re-ID peers (MobileNet, ResNet-50).

`get(name, **kwargs)` builds one by name; `NAMES` lists the valid names.
`FusedBatchNormalization` is the BatchNorm layer the peers use (Keras's, on
TensorFlow's fused kernel); it fits any channels-last peer of your own, and
`with_fused_batch_norm(model)` puts it into a built functional model.
`resnet_cifar_branches` and `reid_branches` build branch cohorts (a shared
trunk and K branches, for `MutualLearningModel(branches, trunk=trunk)`).
`plain_keras(peer)` is a copy of a trained peer made of Keras's own layers,
which any Keras loads without keras_dml.
"""

from keras_dml.models.batch_norm import (
    FusedBatchNormalization,
    with_fused_batch_norm,
)
from keras_dml.models.branches import (
    reid_branches,
    resnet_cifar_branches,
    resnet_depth,
)
from keras_dml.models.inception_cifar import InceptionV1CIFAR, inception_v1_cifar
from keras_dml.models.mobilenet_cifar import MobileNetCIFAR, mobilenet_cifar
from keras_dml.models.plain_keras import plain_keras
from keras_dml.models.reid import ReIDNet, reid_mobilenet, reid_resnet50
from keras_dml.models.resnet_cifar import (
    ResNetCIFAR,
    resnet8,
    resnet20,
    resnet32,
    resnet56,
    resnet110,
)
from keras_dml.models.small_cnn import cnn_small, cnn_wide
from keras_dml.models.wide_resnet import WideResNet, wide_resnet

# The whole registry: name -> constructor taking (num_classes=..., **kwargs).
_CONSTRUCTORS = {
    "resnet32": resnet32,
    "wide_resnet": wide_resnet,
    "mobilenet_cifar": mobilenet_cifar,
    "inception_v1_cifar": inception_v1_cifar,
    "resnet8": resnet8,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "reid_mobilenet": reid_mobilenet,
    "reid_resnet50": reid_resnet50,
    "cnn_small": cnn_small,
    "cnn_wide": cnn_wide,
}
NAMES = tuple(_CONSTRUCTORS)
# Names of keras_dml 0.1's train_market1501.py, still accepted.
ALIASES = {"mobilenet": "reid_mobilenet", "resnet50": "reid_resnet50"}
# The peers that return an embedding beside the logits (re-ID ranking).
REID_NAMES = tuple(n for n in NAMES if n.startswith("reid_"))
# The peers for 32x32 CIFAR images.
CIFAR_NAMES = tuple(
    n for n in NAMES if not n.startswith("reid_") and not n.startswith("cnn_")
)
# Options each family of peers takes besides num_classes and input_shape.
_OPTIONS = {"reid_": ("weights", "dropout", "synchronized_batchnorm"), "cnn_": ()}
_CIFAR_OPTIONS = ("synchronized_batchnorm",)


def canonical_name(name):
    """`name`, or the registry name an old alias stands for."""
    return ALIASES.get(name, name)


def build(name, num_classes, input_shape=None, **options):
    """Builds peer `name` for `num_classes` classes and images of
    `input_shape`, passing on the `options` its family takes (e.g.
    `synchronized_batchnorm` for the CIFAR peers, `weights` and `dropout` for
    the re-ID peers) and ignoring the others."""
    name = canonical_name(name)
    family = next((p for p in _OPTIONS if name.startswith(p)), None)
    accepted = _OPTIONS[family] if family else _CIFAR_OPTIONS
    kwargs = {k: v for k, v in options.items() if k in accepted}
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    return get(name, num_classes=num_classes, **kwargs)


def get(name, **kwargs):
    """Builds the peer network called `name` (one of `NAMES`).

    Example:

    ```python
    peer = keras_dml.models.get("resnet32", num_classes=100)
    ```
    """
    try:
        constructor = _CONSTRUCTORS[canonical_name(name)]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown peer network {name!r}. Valid names: {', '.join(NAMES)}"
        ) from None
    return constructor(**kwargs)


__all__ = [
    "ALIASES",
    "CIFAR_NAMES",
    "NAMES",
    "FusedBatchNormalization",
    "InceptionV1CIFAR",
    "MobileNetCIFAR",
    "ReIDNet",
    "ResNetCIFAR",
    "WideResNet",
    "build",
    "canonical_name",
    "cnn_small",
    "cnn_wide",
    "get",
    "inception_v1_cifar",
    "mobilenet_cifar",
    "reid_mobilenet",
    "reid_resnet50",
    "resnet8",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet110",
    "resnet_cifar_branches",
    "resnet_depth",
    "reid_branches",
    "wide_resnet",
    "with_fused_batch_norm",
    "plain_keras",
]
