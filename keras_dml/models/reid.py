"""Person re-identification peers on `keras.applications` backbones.

A re-ID peer is trained as an identity classifier (logits over the training
ids) and retrieves people by its pooled features. It returns a dict:
`{"logits": [batch, num_classes], "embedding": [batch, dim]}`.
`MutualLearningModel` trains on "logits" and ignores "embedding";
`keras_dml.reid.extract_features` and the `embed` serving signature use it.
"""

import keras
from keras import layers

from keras_dml.models import common
from keras_dml.models.batch_norm import with_fused_batch_norm

REID_INPUT_SHAPE = (256, 128, 3)
WEIGHTS = (None, "imagenet")
# Backbone constructors and the input scaling their ImageNet weights expect
# (a name from keras_dml.data.normalization).
BACKBONES = {
    "mobilenet": (keras.applications.MobileNet, "mobilenet"),
    "resnet50": (keras.applications.ResNet50, "imagenet"),
}


def _backbone(kind, input_shape, weights, name):
    """The `keras.applications` backbone, on fused BatchNorm (1.5x faster)."""
    constructor, _ = BACKBONES[kind]
    try:
        backbone = constructor(
            input_shape=input_shape,
            include_top=False,
            weights=weights,
            pooling="avg",
            name=f"{name}_backbone",
        )
    except Exception as error:
        if "URL fetch failure" in str(error):
            raise OSError(
                f"Could not download the ImageNet weights of {kind} (offline?): "
                f"{error}. With internet, Keras downloads and caches them in "
                "~/.keras/models/; offline, copy that file there, or build the "
                "peer with weights=None."
            ) from error
        raise
    return with_fused_batch_norm(backbone)


@keras.saving.register_keras_serializable(package="keras_dml")
class ReIDNet(keras.Model):
    """A re-ID peer: a backbone, global average pooling, optional dropout and
    an identity classifier.

    Args:
        backbone: "mobilenet" (MobileNet v1, 1024-d features, as the DML
            paper's Market-1501 peers) or "resnet50" (2048-d).
        num_classes: training identities (751 for Market-1501).
        input_shape: `(height, width, 3)` of the (normalized) images.
        weights: None (random) or "imagenet" (Keras downloads and caches them).
        dropout: dropout rate before the classifier (0 for none).
        name: the model name (a unique default per backbone).

    Preprocessing: ImageNet weights expect the "mobilenet" ([-1, 1]) input
    scaling for MobileNet and "imagenet" mean/std scaling for ResNet-50 here
    (`preprocessing` attribute; pass it to `market1501_dataset(normalization=)`
    and `export_peers(preprocessing=)`).

    Example:

    ```python
    peers = [keras_dml.models.reid_mobilenet(751) for _ in range(2)]
    model = keras_dml.MutualLearningModel(peers)
    ```

    Reference: Zhang et al., "Deep Mutual Learning", CVPR 2018, Section 4.
    """

    def __init__(
        self,
        backbone="mobilenet",
        num_classes=751,
        input_shape=REID_INPUT_SHAPE,
        weights=None,
        dropout=0.0,
        name=None,
        **kwargs,
    ):
        if backbone not in BACKBONES:
            raise ValueError(
                f"`backbone` must be one of {tuple(BACKBONES)}. Received: "
                f"backbone={backbone!r}"
            )
        if weights not in WEIGHTS:
            raise ValueError(
                f"`weights` must be None or 'imagenet'. Received: weights={weights!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"`dropout` must be in [0, 1). Received: dropout={dropout}"
            )
        common.check_num_classes(num_classes)
        name = name or common.unique_name(f"reid_{backbone}")
        inputs = keras.Input(shape=input_shape, name="images")
        embedding = _backbone(backbone, tuple(input_shape), weights, name)(inputs)
        embedding = layers.Activation("linear", dtype="float32", name="embedding")(
            embedding
        )
        x = layers.Dropout(dropout, name="dropout")(embedding) if dropout else embedding
        logits = common.classifier(num_classes)(x)
        super().__init__(
            inputs=inputs,
            outputs={"logits": logits, "embedding": embedding},
            name=name,
            **kwargs,
        )
        self.backbone = backbone
        self.num_classes = num_classes
        self.image_shape = tuple(input_shape)
        self.weights_source = weights
        self.dropout = dropout
        self.preprocessing = BACKBONES[backbone][1]

    def get_config(self):
        # Weights are restored from the saved file, never downloaded again.
        return {
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "input_shape": self.image_shape,
            "weights": None,
            "dropout": self.dropout,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def reid_mobilenet(
    num_classes=751, input_shape=REID_INPUT_SHAPE, weights=None, **kwargs
):
    """MobileNet v1 re-ID peer (1024-d embedding). See `ReIDNet`."""
    return ReIDNet("mobilenet", num_classes, input_shape, weights, **kwargs)


def reid_resnet50(
    num_classes=751, input_shape=REID_INPUT_SHAPE, weights=None, **kwargs
):
    """ResNet-50 re-ID peer (2048-d embedding). See `ReIDNet`."""
    return ReIDNet("resnet50", num_classes, input_shape, weights, **kwargs)
