"""Re-ID feature extraction: one peer, a cohort, mirror images, errors. Runs
on every Keras backend (tests/test_backends.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dml
from keras_dml.models import reid_mobilenet, reid_resnet50
from keras_dml.reid import extract_features

SMALL = (64, 32, 3)


def _eval_dataset(count=6, batch_size=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(count, *SMALL)).astype("float32")
    ids = {
        "person_id": np.arange(count, dtype="int32") % 3,
        "camera_id": np.arange(count, dtype="int32") % 2 + 1,
    }
    return tf.data.Dataset.from_tensor_slices((images, ids)).batch(batch_size), images


def test_extract_features_of_a_peer_and_a_cohort():
    dataset, images = _eval_dataset()
    peers = [reid_mobilenet(3, input_shape=SMALL) for _ in range(2)]
    single = extract_features(peers[0], dataset, verbose=0)
    expected = keras.ops.convert_to_numpy(peers[0](images, training=False)["embedding"])
    np.testing.assert_allclose(single.features, expected, atol=1e-5)
    assert single.person_ids.tolist() == [0, 1, 2, 0, 1, 2]
    assert single.camera_ids.tolist() == [1, 2, 1, 2, 1, 2]

    cohort = extract_features(keras_dml.MutualLearningModel(peers), dataset, verbose=0)
    assert set(cohort.features) == {peers[0].name, peers[1].name, "ensemble"}
    np.testing.assert_allclose(
        cohort.features["ensemble"],
        np.concatenate([cohort.features[p.name] for p in peers], axis=1),
    )
    mean = extract_features(peers, dataset, ensemble="mean", normalize=True, verbose=0)
    norms = np.linalg.norm(mean.features[peers[0].name], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        mean.features["ensemble"],
        (mean.features[peers[0].name] + mean.features[peers[1].name]) / 2,
        atol=1e-6,
    )


def test_flip_averages_with_the_mirror_image():
    dataset, images = _eval_dataset()
    peer = reid_mobilenet(3, input_shape=SMALL)
    flipped = extract_features(peer, dataset, flip=True, verbose=0).features

    def embed(x):
        return keras.ops.convert_to_numpy(peer(x, training=False)["embedding"])

    np.testing.assert_allclose(
        flipped, (embed(images) + embed(np.flip(images, axis=2))) / 2, atol=1e-5
    )


@pytest.mark.tensorflow_only  # Argument checks, the same on every backend.
def test_extract_features_errors():
    dataset, _ = _eval_dataset()
    plain = keras.Sequential(
        [keras.Input(SMALL), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    with pytest.raises(ValueError, match="returns no 'embedding'"):
        extract_features(plain, dataset, verbose=0)
    peer = reid_mobilenet(3, input_shape=SMALL)
    labels_only = tf.data.Dataset.from_tensor_slices(
        (np.zeros((2, *SMALL), "float32"), np.zeros(2, "int32"))
    ).batch(2)
    with pytest.raises(ValueError, match="must yield \\(images, \\{'person_id'"):
        extract_features(peer, labels_only, verbose=0)
    with pytest.raises(ValueError, match="`ensemble` must be one of"):
        extract_features([peer, peer], dataset, ensemble="max", verbose=0)
    with pytest.raises(
        ValueError, match="ensemble='mean' needs peers of one feature size"
    ):
        extract_features(
            [peer, reid_resnet50(3, input_shape=SMALL)],
            dataset,
            ensemble="mean",
            verbose=0,
        )
