"""Re-ID peers and feature extraction."""

import warnings

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


def test_parameter_counts_at_market_size():
    assert reid_mobilenet(751).count_params() == 3_998_639  # MobileNet v1 + 751-way.
    assert reid_resnet50(751).count_params() == 25_126_511


@pytest.mark.parametrize(
    "builder, dim", [(reid_mobilenet, 1024), (reid_resnet50, 2048)]
)
def test_outputs_logits_and_embedding(builder, dim):
    peer = builder(5, input_shape=SMALL, dropout=0.2)
    out = peer(np.zeros((2, *SMALL), "float32"))
    assert out["logits"].shape == (2, 5) and out["embedding"].shape == (2, dim)
    assert out["logits"].dtype == "float32" and out["embedding"].dtype == "float32"


@pytest.mark.parametrize(
    "builder, preprocess",
    [
        (reid_mobilenet, keras.applications.mobilenet.preprocess_input),
        (reid_resnet50, keras.applications.resnet50.preprocess_input),
    ],
)
def test_backbone_gets_the_input_its_imagenet_weights_expect(builder, preprocess):
    # The peer takes "imagenet"-normalized RGB; its backbone must see what
    # keras.applications' preprocess_input makes of the same pixels (BGR and
    # the Caffe mean for ResNet-50, [-1, 1] for MobileNet).
    pixels = np.random.default_rng(0).uniform(0, 255, size=(2, *SMALL))
    pixels = pixels.astype("float32")
    normalization = keras_dml.data.normalization
    normalized = normalization.normalize(
        pixels, *normalization.NORMALIZATIONS["imagenet"]
    )
    peer = builder(5, input_shape=SMALL)
    assert peer.preprocessing == "imagenet"
    backbone = peer.get_layer(f"{peer.name}_backbone")
    expected = backbone(preprocess(pixels.copy()), training=False)
    embedding = peer(normalized, training=False)["embedding"]
    np.testing.assert_allclose(embedding, expected, rtol=1e-4, atol=1e-4)


def test_a_cohort_of_two_backbones_shares_one_normalization():
    from keras_dml.reid.report import normalization_of

    peers = [reid_mobilenet(5, input_shape=SMALL), reid_resnet50(5, input_shape=SMALL)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # No "different input scalings" warning.
        assert normalization_of(peers) == "imagenet"


def test_peers_train_in_a_cohort_and_round_trip(tmp_path):
    peers = [reid_mobilenet(3, input_shape=SMALL) for _ in range(2)]
    assert peers[0].name != peers[1].name
    model = keras_dml.MutualLearningModel(peers, label_smoothing=0.1)
    model.compile(keras.optimizers.Adam(2e-4, beta_1=0.5), metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(4, *SMALL)).astype("float32")
    before = [w.copy() for w in peers[0].get_weights()]
    logs = model.train_on_batch(x, np.array([0, 1, 2, 0]), return_dict=True)
    assert {"peer0_loss", "peer1_kl", "ensemble_accuracy"} <= set(logs)
    assert any(not np.array_equal(a, b) for a, b in zip(before, peers[0].get_weights()))
    model.save(tmp_path / "cohort.keras")
    loaded = keras.saving.load_model(tmp_path / "cohort.keras")
    assert type(loaded.peers[0]) is keras_dml.models.ReIDNet
    np.testing.assert_allclose(
        loaded.peers[1](x)["embedding"], peers[1](x)["embedding"], atol=1e-5
    )
    assert loaded.peers[0].get_config()["weights"] is None  # Never re-downloaded.


def test_imagenet_weights_offline_say_so(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception(  # What Keras raises without a network.
            "URL fetch failure on https://storage.googleapis.com/...: None -- "
            "[Errno -2] Name or service not known"
        )

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(
        OSError, match=r"Could not download the ImageNet weights.*weights=None"
    ):
        reid_mobilenet(751, weights="imagenet")


def test_bad_arguments():
    with pytest.raises(ValueError, match="`weights` must be None or 'imagenet'"):
        reid_mobilenet(751, weights="places365")
    with pytest.raises(ValueError, match=r"`dropout` must be in \[0, 1\)"):
        reid_mobilenet(751, dropout=1.0)
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2"):
        reid_resnet50(1)


def test_extract_features_of_a_peer_and_a_cohort():
    dataset, images = _eval_dataset()
    peers = [reid_mobilenet(3, input_shape=SMALL) for _ in range(2)]
    single = extract_features(peers[0], dataset, verbose=0)
    expected = peers[0](images, training=False)["embedding"].numpy()
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
    embed = lambda x: peer(x, training=False)["embedding"].numpy()  # noqa: E731
    np.testing.assert_allclose(
        flipped, (embed(images) + embed(images[:, :, ::-1])) / 2, atol=1e-5
    )


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
