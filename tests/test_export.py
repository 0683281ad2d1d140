"""Export for TF Serving: layout, signatures, equality with the Keras peers in
a fresh process, saved_model_cli, atomic writes and bad inputs."""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dml
from keras_dml import export as export_module
from keras_dml.data.normalization import NORMALIZATIONS
from keras_dml.export import export_peers, folder_names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (32, 32, 3)


def _cifar_cohort():
    peers = [keras_dml.models.resnet32(num_classes=10) for _ in range(2)]
    model = keras_dml.MutualLearningModel(peers)
    # Move BatchNorm statistics off their initial values, so that a served graph
    # in training mode (batch statistics) would give other numbers.
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(16, *SHAPE)).astype("float32")
    for peer in peers:
        peer(x, training=True)
        for layer in peer.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.moving_mean.assign(
                    np.full(layer.moving_mean.shape, 0.3, "float32")
                )
                layer.moving_variance.assign(
                    np.full(layer.moving_variance.shape, 2.0, "float32")
                )
    return model


def _reid_peer(name):
    """A re-ID-shaped peer: logits for training, an embedding for retrieval."""
    inputs = keras.Input((24, 12, 3))
    features = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    )
    embedding = keras.layers.Dense(6, name="embedding")(features)
    logits = keras.layers.Dense(5, name="logits")(embedding)
    return keras.Model(inputs, {"logits": logits, "embedding": embedding}, name=name)


def _images(shape, count=4, seed=0):
    return np.random.default_rng(seed).integers(
        0, 256, size=(count, *shape), dtype=np.uint8
    )


def _keras_outputs(peer, images, preprocessing):
    mean, std = NORMALIZATIONS[preprocessing]
    x = (images.astype("float32") / 255.0 - np.float32(mean)) / np.float32(std)
    output = peer(x, training=False)
    if isinstance(output, dict):
        return np.asarray(tf.nn.softmax(output["logits"])), np.asarray(
            output["embedding"]
        )
    return np.asarray(tf.nn.softmax(output)), None


def _run_in_fresh_process(code, tmp_path):
    script = tmp_path / "load_exports.py"
    script.write_text(textwrap.dedent(code))
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A CIFAR cohort and a re-ID cohort exported once, with their Keras outputs."""
    keras.utils.set_random_seed(7)
    directory = tmp_path_factory.mktemp("exports")
    cifar = _cifar_cohort()
    reid = keras_dml.MutualLearningModel([_reid_peer("reid_a"), _reid_peer("reid_b")])
    cifar_paths = export_peers(cifar, directory / "cifar", preprocessing="cifar100")
    reid_paths = export_peers(
        reid, directory / "reid", version=3, preprocessing="imagenet"
    )
    cifar_images, reid_images = _images(SHAPE), _images((24, 12, 3), seed=1)
    np.save(directory / "cifar_images.npy", cifar_images)
    np.save(directory / "reid_images.npy", reid_images)
    expected = {}
    for name, peer in zip(("resnet32", "resnet32_1"), cifar.peers):
        expected[f"cifar/{name}"] = _keras_outputs(peer, cifar_images, "cifar100")
    expected["cifar/ensemble"] = (
        np.mean(
            [expected["cifar/resnet32"][0], expected["cifar/resnet32_1"][0]], axis=0
        ),
        None,
    )
    reid_outputs = [_keras_outputs(p, reid_images, "imagenet") for p in reid.peers]
    expected["reid/reid_a"], expected["reid/reid_b"] = reid_outputs
    expected["reid/ensemble"] = (
        np.mean([o[0] for o in reid_outputs], axis=0),
        np.concatenate([o[1] for o in reid_outputs], axis=-1),
    )
    return directory, cifar_paths, reid_paths, expected


def test_layout_is_what_tf_serving_expects(exported):
    directory, cifar_paths, reid_paths, _ = exported
    assert sorted(os.listdir(directory / "cifar")) == [
        "ensemble",
        "models.config",
        "resnet32",
        "resnet32_1",
    ]
    config = (directory / "cifar" / "models.config").read_text()
    assert config.startswith("model_config_list {")
    for name in ("resnet32", "resnet32_1", "ensemble"):
        assert f'name: "{name}"\n    base_path: "/models/{name}"' in config
    for name in ("resnet32", "resnet32_1", "ensemble"):
        assert os.listdir(directory / "cifar" / name) == ["1"]
        assert os.path.isfile(directory / "cifar" / name / "1" / "saved_model.pb")
        assert os.path.isdir(directory / "cifar" / name / "1" / "variables")
    assert reid_paths["reid_a"] == str(directory / "reid" / "reid_a" / "3")
    assert cifar_paths["ensemble"] == str(directory / "cifar" / "ensemble" / "1")


def test_fresh_process_gives_the_keras_probabilities(exported, tmp_path):
    directory, _, _, expected = exported
    code = f"""
        import json, os, numpy as np, tensorflow as tf
        directory = {str(directory)!r}
        results = {{}}
        for group, version in (("cifar", "1"), ("reid", "3")):
            x = tf.constant(np.load(os.path.join(directory, group + "_images.npy")))
            for name in sorted(os.listdir(os.path.join(directory, group))):
                if name == "models.config":
                    continue
                path = os.path.join(directory, group, name, version)
                signatures = tf.saved_model.load(path).signatures
                out = signatures["serving_default"](images=x)
                entry = {{k: v.numpy().tolist() for k, v in out.items()}}
                entry["dtypes"] = {{k: v.dtype.name for k, v in out.items()}}
                if "embed" in signatures:
                    embedding = signatures["embed"](images=x)["embedding"]
                    entry["embedding"] = embedding.numpy().tolist()
                results[group + "/" + name] = entry
        print(json.dumps(results))
    """
    results = json.loads(
        _run_in_fresh_process(code, tmp_path).stdout.strip().splitlines()[-1]
    )
    assert sorted(results) == sorted(expected)
    for key, (probabilities, embedding) in expected.items():
        served = results[key]
        assert served["dtypes"] == {
            "probabilities": "float32",
            "classes": "int64",
            "logits": "float32",
        }
        np.testing.assert_allclose(served["probabilities"], probabilities, atol=1e-5)
        np.testing.assert_array_equal(
            served["classes"], np.argmax(probabilities, axis=-1)
        )
        np.testing.assert_allclose(
            tf.nn.softmax(np.asarray(served["logits"], "float32")),
            probabilities,
            atol=1e-5,
        )
        if embedding is None:
            assert "embedding" not in served
        else:
            np.testing.assert_allclose(served["embedding"], embedding, atol=1e-5)


def test_saved_model_cli_shows_and_runs_the_signatures(exported, tmp_path):
    directory, _, reid_paths, expected = exported
    shown = subprocess.run(
        ["saved_model_cli", "show", "--all", "--dir", reid_paths["reid_a"]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    text = shown.stdout
    for fragment in (
        "signature_def['serving_default']",
        "signature_def['embed']",
        "inputs['images']",
        "DT_UINT8",
        "outputs['probabilities']",
        "outputs['classes']",
        "outputs['logits']",
        "outputs['embedding']",
    ):
        assert fragment in text
    run = subprocess.run(
        [
            "saved_model_cli",
            "run",
            "--dir",
            str(directory / "cifar" / "ensemble" / "1"),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"images={directory / 'cifar_images.npy'}",
            "--outdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    probabilities = np.load(tmp_path / "probabilities.npy")
    np.testing.assert_allclose(probabilities, expected["cifar/ensemble"][0], atol=1e-5)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 32, 32, 1), np.uint8),  # Channels.
        np.zeros((32, 32, 3), np.uint8),  # Rank.
        np.zeros((2, 32, 32, 3), np.float32),  # Dtype.
        np.zeros((2, 28, 28, 3), np.uint8),  # Size.
    ],
    ids=["channels", "rank", "dtype", "size"],
)
def test_wrong_images_are_rejected(exported, images):
    directory, _, _, _ = exported
    serve = tf.saved_model.load(str(directory / "cifar" / "resnet32" / "1")).signatures[
        "serving_default"
    ]
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
        serve(images=tf.constant(images))


def _as_tf_serving_calls(signature, images):
    """Runs a loaded signature the way TF Serving does: without the Python
    check of the static input shape (`_call_flat` is TensorFlow's private
    entry below that check; the test needs exactly that path)."""
    return signature._call_flat([tf.constant(images)], signature.captured_inputs)


@pytest.mark.parametrize(
    "images, received",
    [
        (np.zeros((32, 32, 3), np.uint8), "[32 32 3]"),
        (np.zeros((2, 28, 28, 3), np.uint8), "[2 28 28 3]"),
        (np.zeros((2, 32, 32, 1), np.uint8), "[2 32 32 1]"),
        (np.zeros((1, 2, 32, 32, 3), np.uint8), "[1 2 32 32 3]"),
    ],
    ids=["rank3", "size", "channels", "rank5"],
)
def test_the_graph_names_the_expected_and_received_shape(exported, images, received):
    directory, _, _, _ = exported
    loaded = tf.saved_model.load(str(directory / "cifar" / "ensemble" / "1"))
    serve = loaded.signatures["serving_default"]
    expected = f"images must be uint8 [batch, 32, 32, 3]; received shape {received}"
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(expected)):
        _as_tf_serving_calls(serve, images)


@pytest.mark.parametrize("model", ["cifar/resnet32", "cifar/ensemble", "reid/ensemble"])
def test_an_empty_batch_gives_empty_outputs(exported, model):
    directory, _, _, _ = exported
    version = "3" if model.startswith("reid") else "1"
    loaded = tf.saved_model.load(str(directory / model / version))
    shape = SHAPE if model.startswith("cifar") else (24, 12, 3)
    empty = np.zeros((0, *shape), np.uint8)
    outputs = loaded.signatures["serving_default"](images=tf.constant(empty))
    num_classes = outputs["logits"].shape[-1]
    assert outputs["probabilities"].shape == (0, num_classes) and num_classes > 1
    assert outputs["classes"].shape == (0,)
    if model.startswith("reid"):
        embedding = loaded.signatures["embed"](images=tf.constant(empty))["embedding"]
        one = loaded.signatures["embed"](images=tf.zeros((1, *shape), tf.uint8))
        assert embedding.shape == (0, one["embedding"].shape[-1])


def test_existing_version_is_not_overwritten_silently(tmp_path):
    model = keras_dml.MutualLearningModel([_reid_peer("a"), _reid_peer("b")])
    export_peers(model, tmp_path, preprocessing="imagenet")
    marker = tmp_path / "a" / "1" / "keep"
    marker.write_text("x")
    with pytest.raises(FileExistsError, match=r"already exist.*overwrite=True"):
        export_peers(model, tmp_path, preprocessing="imagenet")
    assert marker.exists()
    export_peers(model, tmp_path, preprocessing="imagenet", overwrite=True)
    assert not marker.exists() and (tmp_path / "a" / "1" / "saved_model.pb").exists()
    assert sorted(os.listdir(tmp_path / "a")) == ["1"]  # No temporary folders left.


def test_a_killed_exports_staging_folders_are_removed_by_the_next(tmp_path):
    model = keras_dml.MutualLearningModel([_reid_peer("a"), _reid_peer("b")])
    stale = tmp_path / "a" / ".tmp-1-k2j3"
    (stale / "variables").mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"half")
    export_peers(model, tmp_path, preprocessing="imagenet")
    assert sorted(os.listdir(tmp_path / "a")) == ["1"]


def test_failed_export_leaves_no_version_folder(tmp_path, monkeypatch):
    model = keras_dml.MutualLearningModel([_reid_peer("a"), _reid_peer("b")])
    calls = []
    original = export_module._archive

    def fail_on_second(*args):
        archive = original(*args)
        calls.append(archive)
        if len(calls) == 2:

            def half_write(path, **kwargs):
                os.makedirs(os.path.join(path, "variables"))
                raise OSError("disk full")

            archive.write_out = half_write
        return archive

    monkeypatch.setattr(export_module, "_archive", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        export_peers(model, tmp_path, preprocessing="imagenet")
    for name in os.listdir(tmp_path):
        assert os.listdir(tmp_path / name) == []  # Neither "1" nor a temporary folder.
    assert not (tmp_path / "models.config").exists()


def test_folder_names_are_unique_and_safe():
    a, b = _reid_peer("reid net:v1"), _reid_peer("reid net:v1")
    assert folder_names([a, b]) == ["peer0_reid_net_v1", "peer1_reid_net_v1"]
    assert folder_names([_reid_peer("ensemble"), _reid_peer("x")]) == [
        "peer0_ensemble",
        "peer1_x",
    ]
    assert folder_names([_reid_peer("x"), _reid_peer("y")]) == ["x", "y"]


def test_bad_arguments(tmp_path):
    model = keras_dml.MutualLearningModel([_reid_peer("a"), _reid_peer("b")])
    with pytest.raises(ValueError, match="`version` must be an integer >= 1"):
        export_peers(model, tmp_path, version=0)
    with pytest.raises(ValueError, match="Unknown normalization 'caffe'"):
        export_peers(model, tmp_path, preprocessing="caffe")
    with pytest.raises(ValueError, match="MutualLearningModel or a list"):
        export_peers("model.keras", tmp_path)
    with pytest.raises(ValueError, match=r"image_shape=\(height, width, channels\)"):
        export_peers(model, tmp_path, image_shape=(24, 12))
    with pytest.raises(
        ValueError, match="3 channel means and 3 stds for images with 1"
    ):
        export_peers(model, tmp_path, image_shape=(24, 12, 1))
    with pytest.raises(ValueError, match=r"a \(mean, std\) pair"):
        export_peers(model, tmp_path, preprocessing=0.5)
    assert os.listdir(tmp_path) == []


def test_peers_preprocessing_is_what_the_peers_name():
    from keras_dml.export import peers_preprocessing

    reid = keras_dml.models.reid_mobilenet(5, input_shape=(64, 32, 3))
    assert peers_preprocessing([reid, _reid_peer("b")], default="imagenet") == (
        "imagenet"
    )
    cifar = keras_dml.MutualLearningModel([_reid_peer("a"), _reid_peer("b")])
    assert peers_preprocessing(cifar) == "cifar100"
    with pytest.raises(ValueError, match="name different input normalizations"):
        peers_preprocessing([reid, _reid_peer("c")])


def test_export_from_another_backend_runs_in_a_tensorflow_process(tmp_path):
    """What `export_peers` does on JAX or PyTorch: the model crosses to a
    TensorFlow child process in a .keras file, and the child's errors come
    back as their own type."""
    from keras_dml.export_process import export_in_tensorflow

    peers = [_reid_peer("a"), _reid_peer("b")]
    written = export_in_tensorflow(
        peers, str(tmp_path / "child"), preprocessing="imagenet", version=2
    )
    assert sorted(written) == ["a", "b", "ensemble"]
    export_peers(peers, tmp_path / "here", preprocessing="imagenet", version=2)
    images = tf.constant(_images((24, 12, 3)))
    for name in written:
        outputs = [
            tf.saved_model.load(str(tmp_path / where / name / "2")).signatures[
                "serving_default"
            ](images=images)["probabilities"]
            for where in ("child", "here")
        ]
        np.testing.assert_array_equal(*outputs)
    with pytest.raises(FileExistsError, match=r"already exist.*overwrite=True"):
        export_in_tensorflow(
            peers, str(tmp_path / "child"), preprocessing="imagenet", version=2
        )
    with pytest.raises(ValueError, match="use_averaged=True"):
        export_in_tensorflow(peers, str(tmp_path / "x"), use_averaged=True)


def test_export_script_on_a_saved_cohort(tmp_path):
    """The script exports on TensorFlow whatever KERAS_BACKEND says."""
    model = keras_dml.MutualLearningModel([_reid_peer("a"), _reid_peer("b")])
    model.save(tmp_path / "cohort.keras")
    command = [
        sys.executable,
        os.path.join(REPO, "scripts", "export_peers.py"),
        f"--model={tmp_path / 'cohort.keras'}",
        f"--export_dir={tmp_path / 'models'}",
        "--version=2",
        "--preprocessing=imagenet",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "models")) == [
        "a",
        "b",
        "ensemble",
        "models.config",
    ]
    assert "ensemble: " in result.stdout
    assert "preprocessing: imagenet" in result.stdout
    again = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env
    )
    assert again.returncode == 1 and "already exist" in again.stderr


def test_named_normalizations_follow_one_channel_images(tmp_path):
    # Fashion-MNIST's peers take [28, 28, 1]: "unit" (the same for every
    # channel) follows the images; "cifar100" (three different ones) cannot.
    peers = [
        keras_dml.models.build(n, 10, (28, 28, 1)) for n in ("cnn_small", "resnet8")
    ]
    model = keras_dml.MutualLearningModel(peers)
    export_peers(model, str(tmp_path / "unit"), preprocessing="unit")
    images = _images((28, 28, 1))
    serve = tf.saved_model.load(str(tmp_path / "unit" / "cnn_small" / "1")).signatures[
        "serving_default"
    ]
    served = serve(images=tf.constant(images))["probabilities"].numpy()
    expected = tf.nn.softmax(peers[0](images.astype("float32") / 255.0)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    with pytest.raises(ValueError, match="3 channel means and 3 stds"):
        export_peers(model, str(tmp_path / "cifar"), preprocessing="cifar100")


@pytest.mark.parametrize("dataset", ["digits", "cifar10"])
def test_a_runs_recorded_normalization_is_what_its_export_serves(tmp_path, dataset):
    # export_peers.py used to serve CIFAR-100's statistics for every cohort
    # that did not name one: a CIFAR-10 cohort's logits were off by ~0.5 and
    # a digits cohort (one channel, its own statistics) could not be exported.
    from keras_dml.training import config as settings
    from keras_dml.training.run import run

    given = {"dataset": dataset, "model_dir": str(tmp_path / "run"), "smoke_test": True}
    if dataset == "cifar10":
        given["peers"] = ("cnn_small", "cnn_small")
    run(settings.resolve({**given, "export": False, "verbose": 0}))
    cohort_file = tmp_path / "run" / "cohort.keras"
    recorded = export_module.recorded_preprocessing(str(cohort_file))
    assert recorded == export_module.recorded_preprocessing(
        str(tmp_path / "run" / "checkpoints" / "epoch-0002.keras")
    )
    mean, std = (
        export_module._normalization(recorded)
        if isinstance(recorded, str)
        else recorded
    )
    if dataset == "cifar10":
        from keras_dml.datasets import cifar10

        assert np.allclose(mean, cifar10.MEAN) and np.allclose(std, cifar10.STD)
    model = keras.saving.load_model(cohort_file)
    shape = tuple(model.peers[0].inputs[0].shape[1:])
    export_peers(model, str(tmp_path / "export"), preprocessing=recorded)
    images = _images(shape)
    name = export_module.folder_names(model.peers)[0]
    serve = tf.saved_model.load(str(tmp_path / "export" / name / "1")).signatures[
        "serving_default"
    ]
    served = serve(images=tf.constant(images))["logits"].numpy()
    normalized = (images.astype("float32") / 255.0 - np.float32(mean)) / np.float32(std)
    np.testing.assert_allclose(
        served, model.peers[0].predict(normalized, verbose=0), atol=1e-4
    )


def _children_running(parent_pid, marker):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent_pid and marker in command:
            found.append(int(entry))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_an_export_child_dies_with_its_killed_parent_and_writes_nothing(tmp_path):
    # Issue 28: on JAX and PyTorch the export ran on in an orphan after its
    # parent's SIGKILL and replaced a newer run's export minutes later.
    import signal
    import time

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    code = (
        "import keras_dml, sys;"
        "from keras_dml.export_process import export_in_tensorflow;"
        "peers = [keras_dml.models.build('cnn_small', 10, (8, 8, 1)) for _ in (0, 1)];"
        "model = keras_dml.MutualLearningModel(peers);"
        "export_in_tensorflow(model, sys.argv[1], preprocessing='unit')"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(temporary)}
    parent = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "models")], env=env
    )
    try:
        deadline = time.monotonic() + 120
        children = []
        while not children and time.monotonic() < deadline:
            children = _children_running(parent.pid, b"keras_dml.export_process")
            time.sleep(0.05)
        assert children, "the export child never started"
        (child,) = children
        os.kill(child, signal.SIGSTOP)
        parent.kill()
        parent.wait()
        os.kill(child, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
            with open(f"/proc/{child}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break  # Dead; its new parent (init) reaps it.
            time.sleep(0.05)
        assert (
            not os.path.exists(f"/proc/{child}")
            or "Z" in open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0]
        )
    finally:
        if parent.poll() is None:
            parent.kill()
    assert not (tmp_path / "models").exists() or not any(
        name.isdigit() for _, dirs, _ in os.walk(tmp_path / "models") for name in dirs
    )
    assert not [p for p in temporary.iterdir() if p.name.startswith("keras_dml_export")]


def test_each_branch_of_a_branch_cohort_is_served_alone(tmp_path):
    # Trunk + branch, a standalone SavedModel per peer: what the cohort's
    # peer gives in Keras, with the shared trunk's weights.
    trunk, branches = keras_dml.models.resnet_cifar_branches(2, depth=8, num_classes=5)
    model = keras_dml.MutualLearningModel(branches, trunk=trunk)
    written = export_peers(model, str(tmp_path), preprocessing="unit")
    assert sorted(written) == sorted([*folder_names(model.peers), "ensemble"])
    images = _images(SHAPE, count=3)
    expected = model.predict(np.float32(images) / 255.0, verbose=0)
    for name, logits in zip(folder_names(model.peers), expected):
        serving = tf.saved_model.load(os.path.join(str(tmp_path), name, "1"))
        out = serving.signatures["serving_default"](images=tf.constant(images))
        np.testing.assert_allclose(
            out["probabilities"].numpy(), tf.nn.softmax(logits).numpy(), atol=1e-5
        )
