"""The four CIFAR peer networks of the paper."""

import keras
import numpy as np
import pytest

import keras_dml
from keras_dml import models

# Pinned parameter counts at 100 classes (the paper's figures in comments).
PARAMETER_COUNTS = {
    "resnet32": 472_276,  # 0.46M
    "mobilenet_cifar": 3_331_364,  # 3.3M
    "inception_v1_cifar": 7_656_172,  # 7.8M
    "wide_resnet": 36_554_836,  # 36.5M
}
PAPER_COUNTS = {
    "resnet32": 0.46e6,
    "mobilenet_cifar": 3.3e6,
    "inception_v1_cifar": 7.8e6,
    "wide_resnet": 36.5e6,
}


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_parameter_counts_are_pinned_and_near_the_paper(name):
    net = models.get(name, num_classes=100)
    assert net.count_params() == PARAMETER_COUNTS[name]
    assert abs(net.count_params() / PAPER_COUNTS[name] - 1) <= 0.03


@pytest.mark.parametrize("name", ["resnet32", "mobilenet_cifar", "inception_v1_cifar"])
def test_forward_shapes(name):
    net = models.get(name, num_classes=10)
    out = net(np.zeros((2, 32, 32, 3), "float32"), training=False)
    logits, aux = keras_dml.cohort.mutual_learning.split_peer_output(out, net.name)
    assert tuple(logits.shape) == (2, 10)
    assert [tuple(a.shape) for a in aux] == (
        [(2, 10), (2, 10)] if "inception" in name else []
    )


@pytest.mark.parametrize(
    "name",
    ["resnet8", "resnet20", "mobilenet_cifar", "inception_v1_cifar", "cnn_small"],
)
def test_peers_take_28x28_grayscale_images(name):
    # MNIST and Fashion-MNIST: 28 -> 14 -> 7 through the strided stages.
    net = models.build(name, 10, (28, 28, 1))
    out = net(np.zeros((2, 28, 28, 1), "float32"), training=False)
    logits, _ = keras_dml.cohort.mutual_learning.split_peer_output(out, net.name)
    assert tuple(logits.shape) == (2, 10)
    wide = models.wide_resnet(
        num_classes=10, depth=10, width=1, input_shape=(28, 28, 1)
    )
    assert tuple(wide(np.zeros((1, 28, 28, 1), "float32")).shape) == (1, 10)


def test_wide_resnet_small_forward():
    net = models.wide_resnet(num_classes=10, depth=10, width=1, dropout=0.3)
    assert tuple(net(np.zeros((1, 32, 32, 3), "float32")).shape) == (1, 10)


@pytest.mark.parametrize(
    "make",
    [
        lambda: models.resnet32(num_classes=10),
        lambda: models.mobilenet_cifar(num_classes=10, alpha=0.25, dropout=0.1),
        lambda: models.inception_v1_cifar(num_classes=10),
        lambda: models.wide_resnet(num_classes=10, depth=10, width=2),
    ],
)
def test_config_and_keras_file_round_trip(make, tmp_path):
    net = make()
    config = net.get_config()
    assert net.__class__.from_config(config).get_config() == config
    path = str(tmp_path / "peer.keras")
    net.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(net) and loaded.name == net.name
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    a, b = net(x, training=False), loaded(x, training=False)
    for u, v in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_peers_of_one_architecture_get_distinct_names():
    names = [models.resnet32(num_classes=10).name for _ in range(3)]
    assert len(set(names)) == 3


def test_synchronized_batchnorm_flag_reaches_every_batchnorm():
    net = models.resnet32(num_classes=10, synchronized_batchnorm=True)
    bns = [
        layer
        for layer in net.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert bns and all(bn.synchronized for bn in bns)


def test_cohort_of_heterogeneous_cifar_peers_trains_and_saves(tmp_path):
    peers = [models.inception_v1_cifar(num_classes=5), models.resnet32(num_classes=5)]
    model = keras_dml.MutualLearningModel(peers)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), metrics=["accuracy"])
    x = np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype("float32")
    y = np.arange(8) % 5
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = str(tmp_path / "cohort.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(model.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: models.get("resnet33"), "Valid names: resnet32, wide_resnet"),
        (lambda: models.ResNetCIFAR(depth=33), "depth=33"),
        (lambda: models.WideResNet(depth=27), "depth=27"),
        (lambda: models.WideResNet(width=0), "width=0"),
        (lambda: models.resnet32(num_classes=1), "num_classes=1"),
        (lambda: models.mobilenet_cifar(alpha=0), "alpha=0"),
        (lambda: models.inception_v1_cifar(dropout=1.0), "dropout=1.0"),
    ],
)
def test_bad_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "name, count",
    [
        ("resnet8", 81_620),
        ("resnet20", 276_948),
        ("resnet56", 862_932),
        ("resnet110", 1_741_908),
    ],
)
def test_other_resnet_depths_are_registered(name, count):
    net = models.get(name, num_classes=100)
    assert net.count_params() == count and net.depth == int(name[len("resnet") :])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    "shape, filters", [((3, 32, 32, 16), 32), ((2, 7, 9, 5), 12), ((2, 8, 8, 4), 4)]
)
def test_zero_pad_shortcut_is_subsample_and_pad_bit_for_bit(shape, filters, dtype):
    """The shortcut's convolution form (TensorFlow) gives exactly the
    strided slice and zero padding of option A, forward and backward, also
    for odd sizes and in bfloat16."""
    import tensorflow as tf

    from keras_dml.models.resnet_cifar import ZeroPadShortcut

    rng = np.random.default_rng(0)
    x = tf.cast(rng.normal(size=shape).astype("float32"), dtype)
    upstream = tf.cast(
        rng.normal(size=(shape[0], -(-shape[1] // 2), -(-shape[2] // 2), filters)),
        dtype,
    )
    extra = filters - shape[-1]
    pads = [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]]

    def outputs_and_gradient(function):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = function(x)
        return y, tape.gradient(y, x, output_gradients=upstream)

    policy = "mixed_bfloat16" if dtype == "bfloat16" else "float32"
    got = outputs_and_gradient(ZeroPadShortcut(filters, 2, dtype=policy))
    want = outputs_and_gradient(lambda t: tf.pad(t[:, ::2, ::2, :], pads))
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(
            tf.cast(a, "float32").numpy(), tf.cast(b, "float32").numpy()
        )


def _perturbed(model, seed=0):
    # Non-trivial BatchNorm statistics, so that a layer converted with the
    # wrong weights (or none) changes the outputs.
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            (w + rng.uniform(0.0, 0.1, w.shape)).astype(w.dtype)
            for w in model.get_weights()
        ]
    )
    return model


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: models.resnet8(num_classes=5), (32, 32, 3)),
        (lambda: models.mobilenet_cifar(num_classes=5, alpha=0.25), (32, 32, 3)),
        (lambda: models.inception_v1_cifar(num_classes=5), (32, 32, 3)),
        (lambda: models.cnn_small(num_classes=5, input_shape=(28, 28, 1)), (28, 28, 1)),
        (lambda: models.reid_mobilenet(5, input_shape=(64, 32, 3)), (64, 32, 3)),
        (lambda: models.reid_resnet50(5, input_shape=(64, 32, 3)), (64, 32, 3)),
        (
            lambda: keras.applications.MobileNet(
                input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=5
            ),
            (32, 32, 3),
        ),
    ],
    ids=[
        "resnet8",
        "mobilenet",
        "inception",
        "cnn",
        "reid_mobilenet",
        "reid_resnet50",
        "applications",
    ],
)
def test_plain_keras_peer_loads_without_keras_dml(make, shape, tmp_path):
    import json
    import zipfile

    peer = _perturbed(make())
    plain = models.plain_keras(peer)
    assert type(plain) is keras.Model or type(plain).__name__ == "Functional"
    assert plain.name == peer.name
    path = str(tmp_path / "peer0.keras")
    plain.save(path)
    # Nothing in the file names keras_dml: any Keras 3 loads it.
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert "keras_dml" not in config and "Fused" not in config
    json.loads(config)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(1).normal(size=(2, *shape)).astype("float32")
    expected = peer(x, training=False)
    for got in (plain(x, training=False), loaded(x, training=False)):
        assert keras.tree.assert_same_structure(expected, got) is None
        for u, v in zip(keras.tree.flatten(expected), keras.tree.flatten(got)):
            np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


def test_plain_keras_refuses_a_subclassed_peer():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="rebuilds a functional model"):
        models.plain_keras(Subclassed())


def test_reid_branches_rank_with_their_own_embeddings():
    trunk, branches = models.reid_branches(
        2, num_classes=5, input_shape=(64, 32, 3), embedding_size=16, dropout=0.1
    )
    model = keras_dml.MutualLearningModel(branches, trunk=trunk)
    model.compile("sgd")
    x = np.random.default_rng(0).normal(size=(4, 64, 32, 3)).astype("float32")
    model.train_on_batch(x, np.arange(4) % 5)
    outputs = [peer(x) for peer in model.peers]
    assert all(out["embedding"].shape == (4, 16) for out in outputs)
    # Each branch's embedding is its own, on the one backbone's features.
    assert not np.allclose(outputs[0]["embedding"], outputs[1]["embedding"])
    assert model.peers[0].layers[1] is model.peers[1].layers[1] is trunk
