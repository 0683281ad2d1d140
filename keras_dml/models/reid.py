"""Person re-identification peers on `keras.applications` backbones.

A re-ID peer is trained as an identity classifier (logits over the training
ids) and retrieves people by its pooled features. It returns a dict:
`{"logits": [batch, num_classes], "embedding": [batch, dim]}`.
`MutualLearningModel` trains on "logits" and ignores "embedding";
`keras_dml.reid.extract_features` and the `embed` serving signature use it.

Every re-ID peer takes images normalized with the ImageNet mean and std
(torchreid's and fast-reid's convention, normalization "imagenet") and turns
them into the input its backbone's ImageNet weights were trained on, inside
the model: [-1, 1] for MobileNet, Caffe's BGR with the mean pixel subtracted
for ResNet-50. So one pipeline feeds a cohort of different backbones, and an
exported peer takes plain images.
"""

import keras
import numpy as np
from keras import layers, ops

from keras_dml.models import common
from keras_dml.models.batch_norm import with_fused_batch_norm

REID_INPUT_SHAPE = (256, 128, 3)
WEIGHTS = (None, "imagenet")
# What the peers take: a name from keras_dml.data.normalization.
INPUT_NORMALIZATION = "imagenet"
_IMAGENET_MEAN = np.float32([0.485, 0.456, 0.406])
_IMAGENET_STD = np.float32([0.229, 0.224, 0.225])
# Backbone constructors and the `preprocess_input` mode of their weights.
BACKBONES = {
    "mobilenet": (keras.applications.MobileNet, "tf"),
    "resnet50": (keras.applications.ResNet50, "caffe"),
}
# keras.applications' Caffe mean pixel, in RGB order.
_CAFFE_MEAN_RGB = np.float32([123.68, 116.779, 103.939])


@keras.saving.register_keras_serializable(package="keras_dml")
class BackboneInput(layers.Layer):
    """ImageNet-normalized RGB images -> what `keras.applications`'
    `preprocess_input(pixels, mode)` gives for the same 0..255 pixels.

    mode "tf": [-1, 1]; "caffe": BGR, mean pixel subtracted, 0..255 scale.
    One multiply-add per channel (plus a channel reversal for "caffe").
    """

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe"):
            raise ValueError(f"`mode` must be 'tf' or 'caffe'. Received: {mode!r}")
        self.mode = mode
        # pixels / 255 = x * std + mean, for x normalized with "imagenet".
        if mode == "tf":
            self._scale = 2.0 * _IMAGENET_STD
            self._offset = 2.0 * _IMAGENET_MEAN - 1.0
        else:
            self._scale = 255.0 * _IMAGENET_STD
            self._offset = 255.0 * _IMAGENET_MEAN - _CAFFE_MEAN_RGB

    def call(self, images):
        scale = ops.cast(self._scale, images.dtype)
        offset = ops.cast(self._offset, images.dtype)
        images = images * scale + offset
        return ops.flip(images, axis=-1) if self.mode == "caffe" else images

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def build_backbone(kind, input_shape, weights, name, synchronized=False):
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
    return with_fused_batch_norm(backbone, synchronized=synchronized)


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
        synchronized_batchnorm: BatchNorm statistics over all replicas of a
            distribution strategy, not each replica's.
        name: the model name (a unique default per backbone).

    Input: RGB images normalized with the ImageNet mean and std (the
    `preprocessing` attribute, "imagenet", for `market1501_dataset
    (normalization=)` and `export_peers(preprocessing=)`). A `BackboneInput`
    layer converts them to the backbone's own input: [-1, 1] for MobileNet,
    Caffe-style BGR minus the mean pixel for ResNet-50, which is what their
    ImageNet weights were trained on.

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
        synchronized_batchnorm=False,
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
        common.check_dropout(dropout)
        common.check_num_classes(num_classes)
        name = name or common.unique_name(f"reid_{backbone}")
        inputs = keras.Input(shape=input_shape, name="images")
        mode = BACKBONES[backbone][1]
        backbone_input = BackboneInput(mode, name=f"{mode}_input")(inputs)
        embedding = build_backbone(
            backbone, tuple(input_shape), weights, name, synchronized_batchnorm
        )(backbone_input)
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
        self.synchronized_batchnorm = synchronized_batchnorm
        self.preprocessing = INPUT_NORMALIZATION

    def get_config(self):
        # Weights are restored from the saved file, never downloaded again.
        return {
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "input_shape": self.image_shape,
            "weights": None,
            "dropout": self.dropout,
            "synchronized_batchnorm": self.synchronized_batchnorm,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        # Loading never downloads: the weights come from the saved file. A
        # config naming weights="imagenet" (crafted, or written by hand) would
        # otherwise fetch from the network while a file loads.
        return cls(**{**config, "weights": None})


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
