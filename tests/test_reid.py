"""Re-ID peers and feature extraction."""

import warnings

import keras
import numpy as np
import pytest

import keras_dml
from keras_dml.models import reid_mobilenet, reid_resnet50

SMALL = (64, 32, 3)


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
    with pytest.raises(ValueError, match=r"`dropout` must be a number in \[0, 1\)"):
        reid_mobilenet(751, dropout=1.0)
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2"):
        reid_resnet50(1)


def test_loading_a_config_that_names_imagenet_weights_never_downloads(
    tmp_path, monkeypatch
):
    import json
    import zipfile

    from keras.src.utils import file_utils

    peer = reid_mobilenet(10, input_shape=(64, 32, 3))
    path = tmp_path / "peer.keras"
    peer.save(path)
    # A crafted (or hand-edited) file: its config asks for ImageNet weights.
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    config = json.loads(members["config.json"])
    assert config["config"]["weights"] is None
    config["config"]["weights"] = "imagenet"
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)

    def no_network(*args, **kwargs):
        raise AssertionError("loading a saved model tried to download")

    monkeypatch.setattr(file_utils, "get_file", no_network)
    loaded = keras.saving.load_model(path, compile=False)
    images = np.random.default_rng(0).uniform(size=(2, 64, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        loaded(images)["logits"], peer(images)["logits"], atol=1e-5
    )
