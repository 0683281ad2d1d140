"""Small pieces shared by the peer network families."""

import keras
from keras import layers

from keras_dml.checks import check_number
from keras_dml.models.batch_norm import FusedBatchNormalization

CIFAR_INPUT_SHAPE = (32, 32, 3)


class PeerNetwork(keras.Model):
    """Base of the peer networks: a functional model built by its constructor,
    whose config is the constructor's arguments (as keras-hub's `Backbone`:
    a functional config could not be passed back to the constructor).

    A subclass stores its arguments as attributes of the same names (the
    input shape as `image_shape`, `num_classes`) and lists the others in
    `CONFIG_ARGUMENTS`.
    """

    CONFIG_ARGUMENTS = ()

    def get_config(self):
        config = {name: getattr(self, name) for name in self.CONFIG_ARGUMENTS}
        config.update(
            num_classes=self.num_classes,
            input_shape=self.image_shape,
            name=self.name,
            trainable=self.trainable,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def unique_name(prefix):
    """`prefix`, then `prefix_1`, `prefix_2`, ...: two peers of one architecture
    in a cohort get distinct names (logs, checkpoints, export folders)."""
    uid = keras.backend.get_uid(f"keras_dml_{prefix}")
    return prefix if uid == 1 else f"{prefix}_{uid - 1}"


def batch_norm(synchronized, name, momentum=0.9, epsilon=1e-5):
    """BatchNorm with the momentum/epsilon of the reference CIFAR code.

    `synchronized=True` averages batch statistics over all replicas of a
    distribution strategy (useful when the per-replica batch is small).
    Computed by TensorFlow's fused kernel (see `FusedBatchNormalization`).
    """
    return FusedBatchNormalization(
        momentum=momentum, epsilon=epsilon, synchronized=synchronized, name=name
    )


def conv(filters, kernel_size, strides=1, name=None):
    """Bias-free 'same' convolution with He initialisation (BN follows it)."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def check_num_classes(num_classes):
    check_number("`num_classes`", num_classes, 2, integer=True)


def check_dropout(dropout):
    check_number("`dropout`", dropout, 0, 1, high_open=True)


def classifier(num_classes, name="logits"):
    """The logits layer; float32 so that mixed-precision peers emit float32 logits."""
    return layers.Dense(num_classes, dtype="float32", name=name)
