"""BatchNormalization computed by TensorFlow's fused kernel.

Keras 3's `BatchNormalization` is written with backend-neutral ops: in
training it computes the moments and the normalization as about ten separate
element-wise and reduction ops, and as many again in the backward pass. On a
CPU that is a third of a ResNet-32 training step (profiled in BENCHMARKS.md).
TensorFlow's `FusedBatchNormV3` does the same work in one kernel each way
(oneDNN's on CPU, cuDNN's on GPU), and Grappler can fuse a following ReLU
into it.
"""

import keras
import tensorflow as tf
from keras import layers, ops

# cuDNN rejects epsilon < CUDNN_BN_MIN_EPSILON (1e-5), and float32(1e-5) is
# just below it; tf.nn.fused_batch_norm raises epsilon to this value too.
MIN_FUSED_EPSILON = 1.001e-5
_FUSED_DTYPES = ("float16", "bfloat16", "float32")


@keras.saving.register_keras_serializable(package="keras_dml")
class FusedBatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` on TensorFlow's fused kernel.

    Same arguments, weights, config and results as the Keras layer, in
    training and inference: the batch is normalized with its biased variance,
    and the moving variance is updated with the biased variance too, as Keras
    does (the fused kernel returns the unbiased one; it is converted back).
    Under a mixed precision policy the kernel reads and writes the compute
    dtype and accumulates in float32, as the Keras layer's upcast does.

    The fused kernel is used for 4-D channels-last inputs on the TensorFlow
    backend. Everything else falls back to the Keras computation: a mask,
    `synchronized=True` (cross-replica moments), `renorm=True`, other ranks
    or axes, or another backend. One difference remains on the fused path:
    an `epsilon` below 1.001e-5 is raised to 1.001e-5, because cuDNN rejects
    smaller values (a relative change of at most 1e-3 in epsilon, far below
    float32 noise for any variance above 1e-5).

    Example:

    ```python
    x = keras_dml.models.FusedBatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    ```
    """

    def _uses_fused_kernel(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.synchronized
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis % 4 == 3
            and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES
        )

    def call(self, inputs, training=None, mask=None):
        if not self._uses_fused_kernel(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        scale = ops.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        offset = ops.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        epsilon = max(float(self.epsilon), MIN_FUSED_EPSILON)
        if training and self.trainable:
            outputs, mean, variance = _fused_training(inputs, scale, offset, epsilon)
            momentum = self.momentum
            self.moving_mean.assign(
                ops.cast(self.moving_mean, "float32") * momentum
                + mean * (1.0 - momentum)
            )
            self.moving_variance.assign(
                ops.cast(self.moving_variance, "float32") * momentum
                + variance * (1.0 - momentum)
            )
        else:
            outputs = tf.raw_ops.FusedBatchNormV3(
                x=inputs,
                scale=scale,
                offset=offset,
                mean=ops.cast(self.moving_mean, "float32"),
                variance=ops.cast(self.moving_variance, "float32"),
                epsilon=epsilon,
                data_format="NHWC",
                is_training=False,
            )[0]
        return ops.cast(outputs, self.compute_dtype)


def _fused_training(inputs, scale, offset, epsilon):
    """Normalizes by the batch moments: (outputs, mean, biased variance)."""
    # Empty mean/variance inputs: the kernel computes the batch moments.
    outputs, mean, unbiased, *_ = tf.raw_ops.FusedBatchNormV3(
        x=inputs,
        scale=scale,
        offset=offset,
        mean=tf.zeros([0]),
        variance=tf.zeros([0]),
        epsilon=epsilon,
        data_format="NHWC",
        is_training=True,
    )
    count = tf.cast(tf.size(inputs, out_type=tf.int64), tf.float32) / float(
        inputs.shape[-1]
    )
    # unbiased = biased * n / (n - 1); a single value per channel has a
    # biased variance of 0 (the kernel's n - 1 = 0 would give inf or NaN).
    variance = tf.where(
        count > 1.0, unbiased * ((count - 1.0) / count), tf.zeros_like(unbiased)
    )
    return outputs, mean, variance


def with_fused_batch_norm(model, synchronized=False):
    """A copy of a functional `model` whose Keras `BatchNormalization` layers
    are `FusedBatchNormalization`, with the same weights and layer names.

    For `keras.applications` backbones, which build Keras's layer: two
    MobileNet re-ID peers train 1.5x faster on this CPU with it
    (BENCHMARKS.md). Nested functional models are converted too; other
    layers are re-created from their configs, as `keras.models.clone_model`
    does.

    Example:

    ```python
    backbone = keras.applications.ResNet50(include_top=False, weights=None)
    backbone = keras_dml.models.with_fused_batch_norm(backbone)
    ```

    `synchronized=True` computes every BatchNorm's statistics over all
    replicas of a distribution strategy (Keras's `synchronized`).
    """

    def clone(layer):
        if type(layer) is layers.BatchNormalization:
            config = {**layer.get_config(), "synchronized": synchronized}
            return FusedBatchNormalization.from_config(config)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy
