"""FusedBatchNormalization: Keras's BatchNorm results on TensorFlow's fused kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_dml import models
from keras_dml.models import FusedBatchNormalization


def _pair(shape, epsilon=1e-3, momentum=0.9, **kwargs):
    """A Keras BatchNorm and a fused one with equal, non-trivial weights."""
    reference = keras.layers.BatchNormalization(
        momentum=momentum, epsilon=epsilon, **kwargs
    )
    fused = FusedBatchNormalization(momentum=momentum, epsilon=epsilon, **kwargs)
    reference.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(0)
    weights = [
        rng.uniform(0.5, 1.5, size=w.shape).astype("float32")
        if i in (0, 3)  # gamma, moving variance: positive
        else rng.normal(size=w.shape).astype("float32")
        for i, w in enumerate(reference.get_weights())
    ]
    reference.set_weights(weights)
    fused.set_weights(weights)
    return reference, fused


def _inputs(shape, seed=1):
    rng = np.random.default_rng(seed)
    return tf.constant(3.0 * rng.normal(size=shape) + 1.0, tf.float32)


def _ops_of(layer, x, training):
    fn = tf.function(lambda t: layer(t, training=training))
    graph = fn.get_concrete_function(tf.TensorSpec(x.shape, x.dtype)).graph
    return {op.type for op in graph.get_operations()}


def _forward_and_grads(layer, x, training):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        # A loss that weights every output differently, so that the gradient
        # through the batch moments is not trivially zero.
        weights = tf.sin(tf.range(tf.size(y), dtype=y.dtype))
        loss = tf.reduce_sum(y * tf.reshape(weights, tf.shape(y)))
    variables = [layer.gamma, layer.beta]
    grads = tape.gradient(loss, [x, *variables])
    return y, grads


@pytest.mark.parametrize("training", [True, False])
def test_matches_keras_batchnorm_outputs_gradients_and_moving_statistics(training):
    shape = (8, 5, 4, 6)
    reference, fused = _pair(shape)
    x = _inputs(shape)
    y_ref, grads_ref = _forward_and_grads(reference, x, training)
    y, grads = _forward_and_grads(fused, x, training)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4)
    # Moving statistics: Keras's update with the biased batch variance.
    for a, b in zip(fused.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert "FusedBatchNormV3" in _ops_of(fused, x, training)


def test_moving_variance_uses_the_biased_batch_variance():
    shape = (2, 3, 3, 4)
    layer = FusedBatchNormalization(momentum=0.0)
    x = _inputs(shape)
    layer(x, training=True)
    np.testing.assert_allclose(
        layer.moving_mean.numpy(), np.mean(x.numpy(), axis=(0, 1, 2)), rtol=1e-5
    )
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), np.var(x.numpy(), axis=(0, 1, 2)), rtol=1e-5
    )


def test_one_value_per_channel_gives_zero_variance_like_keras():
    shape = (1, 1, 1, 3)
    reference, fused = _pair(shape)
    x = _inputs(shape)
    np.testing.assert_allclose(
        fused(x, training=True), reference(x, training=True), atol=1e-5
    )
    assert np.all(np.isfinite(fused.moving_variance.numpy()))
    np.testing.assert_allclose(
        fused.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-6
    )


def test_small_epsilon_is_raised_for_cudnn_and_stays_close():
    shape = (4, 3, 3, 5)
    reference, fused = _pair(shape, epsilon=1e-5)
    x = _inputs(shape)
    np.testing.assert_allclose(
        fused(x, training=True), reference(x, training=True), rtol=1e-4, atol=1e-5
    )
    assert fused.get_config()["epsilon"] == 1e-5  # The config is not changed.


def test_bfloat16_policy_computes_in_bfloat16_close_to_keras():
    shape = (8, 4, 4, 6)
    reference, fused = _pair(shape, dtype="mixed_bfloat16")
    x = tf.cast(_inputs(shape), tf.bfloat16)
    y = fused(x, training=True)
    assert y.dtype == tf.bfloat16
    np.testing.assert_allclose(
        tf.cast(y, tf.float32),
        tf.cast(reference(x, training=True), tf.float32),
        rtol=2e-2,
        atol=2e-2,
    )
    assert fused.moving_mean.dtype == "float32"
    np.testing.assert_allclose(
        fused.moving_mean.numpy(), reference.moving_mean.numpy(), rtol=1e-2, atol=1e-2
    )


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((8, 6), {}),  # Rank 2: a Dense layer's outputs.
        ((4, 5, 6), {}),  # Rank 3: sequences.
        ((4, 3, 3, 6), {"synchronized": True}),  # Cross-replica moments.
        ((4, 6, 3, 3), {"axis": 1}),  # Channels first.
    ],
)
def test_other_cases_fall_back_to_keras(shape, kwargs):
    reference, fused = _pair(shape, **kwargs)
    x = _inputs(shape)
    np.testing.assert_allclose(
        fused(x, training=True), reference(x, training=True), rtol=1e-5, atol=1e-5
    )
    for a, b in zip(fused.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert "FusedBatchNormV3" not in _ops_of(fused, x, True)


def test_frozen_layer_uses_the_moving_statistics_in_training():
    shape = (4, 3, 3, 5)
    reference, fused = _pair(shape)
    reference.trainable = fused.trainable = False
    before = fused.get_weights()
    x = _inputs(shape)
    np.testing.assert_allclose(
        fused(x, training=True), reference(x, training=True), rtol=1e-5, atol=1e-5
    )
    for a, b in zip(fused.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_stateless_call_returns_the_updates_without_applying_them():
    shape = (4, 3, 3, 5)
    _, fused = _pair(shape)
    x = _inputs(shape)
    before = [v.numpy() for v in fused.non_trainable_variables]
    _, updated = fused.stateless_call(
        [v.value for v in fused.trainable_variables],
        [v.value for v in fused.non_trainable_variables],
        x,
        training=True,
    )
    for a, b in zip(fused.non_trainable_variables, before):
        np.testing.assert_array_equal(a.numpy(), b)
    fused(x, training=True)
    for a, b in zip(updated, fused.non_trainable_variables):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-6)


def test_serializes_and_peers_use_it(tmp_path):
    layer = FusedBatchNormalization(momentum=0.8, epsilon=1e-4, center=False)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(restored) is FusedBatchNormalization
    assert restored.get_config() == layer.get_config()

    peer = models.resnet8(num_classes=3)
    assert any(isinstance(x, FusedBatchNormalization) for x in peer.layers)
    x = _inputs((2, 32, 32, 3))
    path = str(tmp_path / "peer.keras")
    peer.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded(x, training=False), peer(x, training=False), rtol=1e-5, atol=1e-6
    )


def _bn_layers(model):
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _bn_layers(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def test_with_fused_batch_norm_converts_nested_models_keeping_weights():
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(
        inner_in,
        keras.layers.BatchNormalization(name="inner_bn")(
            keras.layers.Conv2D(4, 3, padding="same", name="inner_conv")(inner_in)
        ),
        name="inner",
    )
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = inner(x)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs, name="outer")
    # Non-trivial moving statistics.
    model(_inputs((4, 8, 8, 3)), training=True)

    fused = models.with_fused_batch_norm(model)
    assert fused.name == "outer"
    bns = _bn_layers(fused)
    assert [bn.name for bn in bns] == ["bn", "inner_bn"]
    assert all(type(bn) is FusedBatchNormalization for bn in bns)
    assert all(type(bn) is keras.layers.BatchNormalization for bn in _bn_layers(model))
    for a, b in zip(fused.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _inputs((4, 8, 8, 3), seed=2)
    for training in (False, True):
        np.testing.assert_allclose(
            fused(x, training=training),
            model(x, training=training),
            rtol=1e-4,
            atol=1e-4,
        )


def test_reid_peers_use_the_fused_layer():
    peer = models.reid_mobilenet(5, input_shape=(64, 32, 3))
    bns = _bn_layers(peer)
    assert bns and all(type(bn) is FusedBatchNormalization for bn in bns)
