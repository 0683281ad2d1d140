"""Small CNN peers for tiny images (the quickstart's 8x8 digits)."""

import keras
from keras import layers

from keras_dml.models.batch_norm import FusedBatchNormalization


def small_cnn(filters, num_classes=10, input_shape=(8, 8, 1), name=None):
    """Two conv blocks (the first followed by 2x2 max pooling), global average
    pooling and a linear classifier returning logits."""
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for i, width in enumerate(filters):
        x = layers.Conv2D(
            width, 3, padding="same", use_bias=False, name=f"conv{i + 1}"
        )(x)
        # Momentum 0.9: with ~10 steps per epoch, Keras's default 0.99 leaves
        # the moving statistics far behind the weights (test accuracy ~50%).
        x = FusedBatchNormalization(momentum=0.9, name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
        if i == 0:
            x = layers.MaxPooling2D(name="pool")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def cnn_small(num_classes=10, input_shape=(8, 8, 1), **kwargs):
    """16 and 32 filters (the smaller of the digits' default peers)."""
    return small_cnn(
        (16, 32), num_classes, input_shape, name=kwargs.pop("name", "cnn_small")
    )


def cnn_wide(num_classes=10, input_shape=(8, 8, 1), **kwargs):
    """32 and 64 filters (the quickstart's peers, chosen on validation)."""
    return small_cnn(
        (32, 64), num_classes, input_shape, name=kwargs.pop("name", "cnn_wide")
    )
