"""keras_dml.analysis: posterior entropy and the loss under weight noise, on
any cohort or peer, against NumPy, leaving the weights as they were. A core
file: it runs on every backend (tests/test_backends.py)."""

import math

import keras
import numpy as np
import pytest

import keras_dml
from keras_dml import analysis
from tests.helpers import NUM_CLASSES, data, dense_peer


def _numpy_logits(peer, x):
    return keras.ops.convert_to_numpy(peer(x, training=False))


def _entropy(z):
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return float(np.mean(-np.sum(p * np.log(p), -1)))


def _ce(z, y):
    z = z - z.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(np.mean(-log_p[np.arange(len(y)), y]))


def test_posterior_entropy_matches_numpy_for_every_peer():
    peers = [dense_peer(0), dense_peer(10, batchnorm=True)]
    model = keras_dml.MutualLearningModel(peers)
    x, y = data(40)
    entropies = analysis.posterior_entropy(model, (x, y), batch_size=16)
    expected = [_entropy(_numpy_logits(p, x)) for p in peers]
    np.testing.assert_allclose(entropies, expected, rtol=1e-5)
    assert all(0 <= e <= math.log(NUM_CLASSES) for e in entropies)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 40, 8)]
    np.testing.assert_allclose(
        analysis.posterior_entropy(peers[0], batches), expected[:1], rtol=1e-5
    )


def test_uniform_logits_have_the_largest_entropy():
    peer = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(NUM_CLASSES, kernel_initializer="zeros")]
    )
    (entropy,) = analysis.posterior_entropy(peer, (np.ones((4, 3)), np.zeros(4)))
    assert entropy == pytest.approx(math.log(NUM_CLASSES), rel=1e-6)


def test_loss_under_weight_noise_restores_the_weights_and_is_seeded():
    peers = [dense_peer(0, batchnorm=True), dense_peer(10)]
    model = keras_dml.MutualLearningModel(peers)
    x, y = data(32)
    before = [keras.ops.convert_to_numpy(v) for v in model.weights]
    sigmas = [0.0, 0.05, 0.5, 2.0]
    losses = analysis.loss_under_weight_noise(model, (x, y), sigmas, repeats=2)
    assert losses.shape == (2, 4)
    for peer, row in zip(peers, losses):
        assert row[0] == pytest.approx(_ce(_numpy_logits(peer, x), y), rel=1e-5)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    again = analysis.loss_under_weight_noise(model, (x, y), sigmas, repeats=2)
    np.testing.assert_allclose(again, losses, rtol=1e-6)
    # Large noise destroys what was learned; the sigma=2 loss is far higher.
    trained = dense_peer(3)
    trained.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    trained.fit(x, y, epochs=30, verbose=0)
    (row,) = analysis.loss_under_weight_noise(trained, (x, y), [0.0, 2.0])
    assert row[1] > row[0] + 0.5


def test_bad_arguments_are_named():
    x, y = data(8)
    with pytest.raises(ValueError, match="`sigmas` must be finite and >= 0"):
        analysis.loss_under_weight_noise(dense_peer(0), (x, y), [0.1, -1])
    with pytest.raises(ValueError, match="`repeats` must be an integer >= 1"):
        analysis.loss_under_weight_noise(dense_peer(0), (x, y), [0.1], repeats=0)
