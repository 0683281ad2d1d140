"""Peer networks: the four CIFAR architectures of the DML paper, other depths
of the CIFAR ResNet, and the re-ID peers (MobileNet, ResNet-50).

`get(name, **kwargs)` builds one by name; `NAMES` lists the valid names.
`FusedBatchNormalization` is the BatchNorm layer the peers use (Keras's, on
TensorFlow's fused kernel); it fits any channels-last peer of your own, and
`with_fused_batch_norm(model)` puts it into a built functional model.
"""

from keras_dml.models.batch_norm import (
    FusedBatchNormalization,
    with_fused_batch_norm,
)
from keras_dml.models.inception_cifar import InceptionV1CIFAR, inception_v1_cifar
from keras_dml.models.mobilenet_cifar import MobileNetCIFAR, mobilenet_cifar
from keras_dml.models.reid import ReIDNet, reid_mobilenet, reid_resnet50
from keras_dml.models.resnet_cifar import (
    ResNetCIFAR,
    resnet8,
    resnet20,
    resnet32,
    resnet56,
    resnet110,
)
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
}
NAMES = tuple(_CONSTRUCTORS)
# The peers for 32x32 CIFAR images (scripts/train_cifar.py).
CIFAR_NAMES = tuple(n for n in NAMES if not n.startswith("reid_"))


def get(name, **kwargs):
    """Builds the peer network called `name` (one of `NAMES`).

    Example:

    ```python
    peer = keras_dml.models.get("resnet32", num_classes=100)
    ```
    """
    try:
        constructor = _CONSTRUCTORS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown peer network {name!r}. Valid names: {', '.join(NAMES)}"
        ) from None
    return constructor(**kwargs)


__all__ = [
    "CIFAR_NAMES",
    "NAMES",
    "FusedBatchNormalization",
    "InceptionV1CIFAR",
    "MobileNetCIFAR",
    "ReIDNet",
    "ResNetCIFAR",
    "WideResNet",
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
    "wide_resnet",
    "with_fused_batch_norm",
]
