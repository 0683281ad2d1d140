"""MNIST and Fashion-MNIST: the IDX reader on tiny files in the exact original
format (gzipped and plain), every check naming its file, keras's mnist.npz,
where the files are found without --data_dir, Debian's real copy when it is
installed, and a run on each through the registry."""

import gzip
import os
import struct
import time

import numpy as np
import pytest
from data_fixtures import IDX_NAMES, idx_arrays, idx_bytes, write_idx_folder

from keras_dml import datasets
from keras_dml.data import idx, releases
from keras_dml.datasets import fashion_mnist, mnist, registry
from keras_dml.training import config as settings
from keras_dml.training.run import run


@pytest.fixture
def idx_folder(tmp_path):
    train, test = idx_arrays(30, seed=1), idx_arrays(20, seed=2)
    return write_idx_folder(tmp_path / "idx", train, test), train, test


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
@pytest.mark.parametrize(
    "read",
    [fashion_mnist.read_fashion_mnist, mnist.read_mnist],
    ids=["fashion", "mnist"],
)
def test_reads_both_splits_as_written(tmp_path, gz, read):
    train, test = idx_arrays(30, seed=1), idx_arrays(20, seed=2)
    folder = write_idx_folder(tmp_path, train, test, gz=gz)
    for split, (images, labels) in (("train", train), ("test", test)):
        read_images, read_labels = read(folder, split)
        assert read_images.shape == (len(images), 28, 28, 1)
        assert read_images.dtype == np.uint8 and read_labels.dtype == np.int64
        np.testing.assert_array_equal(read_images[..., 0], images)
        np.testing.assert_array_equal(read_labels, labels)


def _rewrite(folder, name, data):
    path = os.path.join(folder, f"{name}.gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(data))
    return path


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: struct.pack(">I", 0x00000801) + d[4:], "magic number 0x00000801"),
        (lambda d: d[:-7], "truncated or damaged"),
        (lambda d: d + b"\0", "truncated or damaged"),
        (lambda d: d[:10], "shorter than an IDX header"),
    ],
    ids=["magic", "truncated", "trailing", "header"],
)
def test_a_bad_header_or_length_names_the_file(idx_folder, damage, message):
    folder, (images, _), _ = idx_folder
    path = _rewrite(folder, IDX_NAMES["train"][0], damage(idx_bytes(images)))
    with pytest.raises(ValueError, match=message) as error:
        fashion_mnist.read_fashion_mnist(folder, "train")
    assert path in str(error.value)


def test_a_damaged_gzip_stream_names_the_file(idx_folder):
    folder, _, _ = idx_folder
    path = os.path.join(folder, f"{IDX_NAMES['test'][1]}.gz")
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[-6] ^= 0xFF  # The CRC.
    with open(path, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(ValueError, match="damaged or truncated gzip") as error:
        mnist.read_mnist(folder, "test")
    assert path in str(error.value)
    with open(path, "wb") as f:
        f.write(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="damaged or truncated gzip"):
        mnist.read_mnist(folder, "test")


def test_images_and_labels_must_agree_and_labels_be_classes(idx_folder):
    folder, (images, labels), _ = idx_folder
    _rewrite(folder, IDX_NAMES["train"][1], idx_bytes(labels[:-1]))
    with pytest.raises(ValueError, match="30 images but .* 29 labels"):
        fashion_mnist.read_fashion_mnist(folder, "train")
    bad = labels.copy()
    bad[3] = 10
    path = _rewrite(folder, IDX_NAMES["train"][1], idx_bytes(bad))
    with pytest.raises(ValueError, match="label 10 found") as error:
        fashion_mnist.read_fashion_mnist(folder, "train")
    assert path in str(error.value)


def test_a_missing_file_is_named_with_how_to_get_the_files(idx_folder):
    folder, _, _ = idx_folder
    os.remove(os.path.join(folder, f"{IDX_NAMES['test'][0]}.gz"))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz") as error:
        fashion_mnist.read_fashion_mnist(folder, "test")
    assert "apt-get install dataset-fashion-mnist" in str(error.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fashion_mnist.read_fashion_mnist(os.path.join(folder, "nope"), "test")


def test_an_official_size_file_with_other_bytes_is_refused(tmp_path):
    # 10,000 labels make the official t10k-labels size (10,008 bytes): a copy
    # whose bytes differ from the official MD5 is damaged, not a subset.
    train = idx_arrays(20, seed=1)
    test_images, _ = idx_arrays(20, seed=2)
    test_labels = (np.arange(10_000) % 10).astype(np.uint8)
    folder = write_idx_folder(tmp_path, train, (test_images, test_labels))
    with pytest.raises(ValueError, match="bytes changed in place") as error:
        fashion_mnist.read_fashion_mnist(folder, "test")
    assert "15d484375f8d13e6eb1aabb0c3f46965" in str(error.value)
    assert "t10k-labels-idx1-ubyte.gz" in str(error.value)


def test_mnist_warns_on_a_recompressed_official_name(idx_folder):
    folder, _, _ = idx_folder
    with pytest.warns(releases.RepackedArchiveWarning, match="not the official"):
        images, _ = mnist.read_mnist(folder, "train")
    assert len(images) == 30


def test_mnist_reads_keras_npz_and_checks_it(tmp_path):
    (x_train, y_train), (x_test, y_test) = idx_arrays(12), idx_arrays(8, seed=3)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    for source in (path, tmp_path):
        images, labels = mnist.read_mnist(source, "test")
        np.testing.assert_array_equal(images[..., 0], x_test)
        np.testing.assert_array_equal(labels, y_test)
    np.savez(
        path, x_train=x_train[:, :5], y_train=y_train, x_test=x_test, y_test=y_test
    )
    with pytest.raises(ValueError, match=r"x_train must be uint8 \[N, 28, 28\]"):
        mnist.read_mnist(path, "train")
    path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not a readable mnist.npz"):
        mnist.read_mnist(path, "train")


def test_without_data_dir_and_offline_it_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(
        "keras_dml.data.network.unreachable", lambda url, timeout=5.0: "no network"
    )
    started = time.monotonic()
    with pytest.raises(ValueError, match="cannot be downloaded") as error:
        fashion_mnist.load_fashion_mnist("train")
    assert "apt-get install dataset-fashion-mnist" in str(error.value)
    with pytest.raises(ValueError, match="cannot be downloaded"):
        mnist.load_mnist("train")
    assert time.monotonic() - started < 5


def test_without_data_dir_keras_cache_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "none"))
    train, test = idx_arrays(10), idx_arrays(10, seed=4)
    write_idx_folder(tmp_path / "datasets" / "fashion-mnist", train, test)
    images, labels = fashion_mnist.load_fashion_mnist("test")
    np.testing.assert_array_equal(labels, test[1])
    np.savez(
        tmp_path / "datasets" / "mnist.npz",
        x_train=train[0],
        y_train=train[1],
        x_test=test[0],
        y_test=test[1],
    )
    images, _ = mnist.load_mnist("train")
    np.testing.assert_array_equal(images[..., 0], train[0])


@pytest.mark.skipif(
    not idx.holds_split(fashion_mnist.DEBIAN_DIR, "test"),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_reads_debians_real_fashion_mnist():
    assert fashion_mnist.local_copy() is not None
    images, labels = fashion_mnist.read_fashion_mnist(fashion_mnist.DEBIAN_DIR, "test")
    assert images.shape == (10_000, 28, 28, 1)
    assert np.bincount(labels).tolist() == [1000] * 10
    train_images, _ = fashion_mnist.read_fashion_mnist(
        fashion_mnist.DEBIAN_DIR, "train"
    )
    pixels = train_images.astype(np.float64) / 255
    assert abs(pixels.mean() - fashion_mnist.MEAN[0]) < 1e-4
    assert abs(pixels.std() - fashion_mnist.STD[0]) < 1e-4


def test_the_validation_split_is_stratified_fixed_and_disjoint():
    labels = np.repeat(np.arange(10), 60)
    kept, held = registry.hold_out(labels, 50)
    assert len(held) == 50 and len(kept) == 550
    assert not set(kept) & set(held)
    assert np.bincount(labels[held]).tolist() == [5] * 10
    np.testing.assert_array_equal(registry.hold_out(labels, 50)[1], held)


def test_the_datasets_are_registered_with_defaults_and_hints():
    for module, name in ((fashion_mnist, "fashion_mnist"), (mnist, "mnist")):
        assert datasets.get(name) is module.DATASET
        config = settings.resolve({"dataset": name, "model_dir": "x"})
        assert config.validation_size == 5000 and config.peers == ("resnet20",) * 2
        missing = settings.resolve(
            {"dataset": name, "model_dir": "x", "data_dir": "/no/such"}
        )
        assert module.DOWNLOAD_HINT in datasets.data_dir_problem(missing)
    with pytest.raises(ValueError, match="--validation_size applies to"):
        settings.resolve({"dataset": "folder", "model_dir": "x", "validation_size": 5})
    with pytest.raises(ValueError, match="--validation_size must be an integer >= 0"):
        settings.resolve({"dataset": "mnist", "model_dir": "x", "validation_size": -1})


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["fashion_mnist", "mnist"])
def test_a_run_holds_out_validation_and_reports_the_test_set(tmp_path, dataset, capsys):
    train, test = idx_arrays(40, seed=1), idx_arrays(20, seed=2)
    folder = write_idx_folder(tmp_path / "data", train, test)
    config = settings.resolve(
        {
            "dataset": dataset,
            "data_dir": folder,
            "model_dir": str(tmp_path / "run"),
            "peers": ("cnn_small", "resnet8"),
            "epochs": 1,
            "batch_size": 8,
            "validation_size": 10,
            "train_size": 16,
            "seed": 0,
            "export": False,
        }
    )
    results = run(config)
    # 30 training images left after 10 held out, 16 of them used: 2 steps of 8.
    assert results["steps_per_epoch"] == 2
    assert set(results["top1"]) == {"peer0", "peer1", "ensemble"}
    assert "val_peer0_accuracy" in results["history"][0]
    assert "validation accuracy" in capsys.readouterr().out
