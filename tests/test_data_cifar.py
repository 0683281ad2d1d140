"""CIFAR-100 readers: every source format, and every way a file can be bad."""

import os
import pickle
import tarfile
import time

import numpy as np
import pytest
from data_fixtures import (
    cifar_arrays,
    cifar_binary_bytes,
    python2_pickle,
    write_cifar_archive,
    write_cifar_folder,
)

from keras_dml.data import network
from keras_dml.datasets import cifar100
from keras_dml.datasets.cifar100 import load_cifar100, load_cifar100_tfds, read_cifar100


@pytest.fixture(scope="module")
def splits():
    return {"train": cifar_arrays(7, seed=1), "test": cifar_arrays(3, seed=2)}


@pytest.mark.parametrize("kind", ["binary", "python"])
@pytest.mark.parametrize("source", ["archive", "folder", "parent"])
def test_reads_every_source_exactly(tmp_path, splits, kind, source):
    if source == "archive":
        path = write_cifar_archive(tmp_path, kind, splits)
    else:
        path = write_cifar_folder(tmp_path, kind, splits)
        if source == "parent":
            path = tmp_path
    for split, (images, fine, _) in splits.items():
        read_images, read_labels = read_cifar100(path, split)
        assert read_images.dtype == np.uint8 and read_images.shape == images.shape
        np.testing.assert_array_equal(read_images, images)
        np.testing.assert_array_equal(read_labels, fine)


def test_pixel_layout_is_planar_rgb_row_major(tmp_path):
    # One image whose red plane counts 0..1023 row by row, green is 7, blue 9.
    red = (np.arange(1024) % 256).astype(np.uint8)
    record = bytes([3, 42]) + red.tobytes() + bytes([7]) * 1024 + bytes([9]) * 1024
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    (folder / "train.bin").write_bytes(record)
    images, labels = read_cifar100(folder, "train")
    assert labels.tolist() == [42]
    assert images[0, 0, 1, 0] == 1 and images[0, 1, 0, 0] == 32  # (row, col) order.
    assert images[0, 5, 5, 1] == 7 and images[0, 5, 5, 2] == 9


def test_archive_is_never_extracted(tmp_path, splits):
    path = write_cifar_archive(tmp_path, "binary", splits)
    before = sorted(os.listdir(tmp_path))
    read_cifar100(path, "train")
    assert sorted(os.listdir(tmp_path)) == before


def test_wrong_size_names_file_and_record_size(tmp_path, splits):
    data = cifar_binary_bytes(*splits["train"]) + b"\x00"
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    (folder / "train.bin").write_bytes(data)
    with pytest.raises(
        ValueError, match=r"train\.bin: 21,519 bytes .* 3,074-byte record"
    ):
        read_cifar100(folder, "train")


def test_empty_file(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    (folder / "test.bin").write_bytes(b"")
    (folder / "train.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"test\.bin: 0 bytes"):
        read_cifar100(folder, "test")


@pytest.mark.parametrize("kind", ["binary", "python"])
def test_label_out_of_range(tmp_path, kind):
    images, fine, coarse = cifar_arrays(4)
    fine[2] = 100
    with pytest.raises(
        ValueError, match=r"fine label 100 at record 2 is outside 0\.\.99"
    ):
        read_cifar100(
            write_cifar_archive(tmp_path, kind, {"train": (images, fine, coarse)})
        )


def test_truncated_archive(tmp_path, splits):
    path = write_cifar_archive(tmp_path, "python", splits)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cifar-100-python\.tar\.gz: .*truncated"):
        read_cifar100(path, "train")


def test_truncated_pickle(tmp_path, splits):
    folder = write_cifar_folder(tmp_path, "python", splits)
    data = open(os.path.join(folder, "train"), "rb").read()
    with open(os.path.join(folder, "train"), "wb") as f:
        f.write(data[:-100])
    with pytest.raises(ValueError, match=r"train: not a readable CIFAR pickle"):
        read_cifar100(folder, "train")


def test_pickle_with_wrong_content(tmp_path, splits):
    folder = write_cifar_folder(tmp_path, "python", splits)
    with open(os.path.join(folder, "test"), "wb") as f:
        f.write(python2_pickle({b"data": np.zeros((2, 10), np.uint8)}))
    with pytest.raises(ValueError, match=r"test: b'data' must be a uint8 array"):
        read_cifar100(folder, "test")


def test_a_python3_protocol_2_pickle_reads(tmp_path, splits):
    # Python 3 writes bytes into a protocol-2 pickle as _codecs.encode(text,
    # "latin1"): that call is allowed, with that codec only.
    folder = write_cifar_folder(tmp_path, "python", splits)
    want = read_cifar100(folder, "test")
    with open(os.path.join(folder, "test"), "rb") as f:
        content = pickle.load(f, encoding="bytes")
    with open(os.path.join(folder, "test"), "wb") as f:
        f.write(pickle.dumps(content, protocol=2))
    assert b"_codecs" in open(os.path.join(folder, "test"), "rb").read()
    got = read_cifar100(folder, "test")
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


class _EncodesWith:
    def __reduce__(self):
        import _codecs

        return (_codecs.encode, ("eJzLSM3JyQcABiwCFQ==", "base64"))


def test_codecs_encode_with_another_codec_is_refused(tmp_path, splits):
    folder = write_cifar_folder(tmp_path, "python", splits)
    with open(os.path.join(folder, "train"), "wb") as f:
        f.write(pickle.dumps({b"data": _EncodesWith()}, protocol=2))
    with pytest.raises(
        ValueError, match=r"train: refused .*_codecs.encode with 'base64'"
    ):
        read_cifar100(folder, "train")


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_runs_nothing(tmp_path, splits):
    marker = tmp_path / "pwned"
    folder = write_cifar_folder(tmp_path, "python", splits)
    with open(os.path.join(folder, "train"), "wb") as f:
        f.write(pickle.dumps(_RunsACommand(marker), protocol=2))
    with pytest.raises(ValueError, match=r"train: refused .*(posix|os)\.system"):
        read_cifar100(folder, "train")
    assert not marker.exists()
    # Plain pickle.load would have run it: the test payload is real.
    pickle.loads(open(os.path.join(folder, "train"), "rb").read())
    assert marker.exists()


@pytest.mark.parametrize(
    "member",
    ["../evil.bin", "/tmp/evil.bin", "cifar-100-binary/../../evil.bin"],
)
def test_archive_member_escaping_the_folder(tmp_path, splits, member):
    path = write_cifar_archive(tmp_path, "binary", splits, extra={member: b"x"})
    with pytest.raises(ValueError, match=r"points outside the archive's folder"):
        read_cifar100(path, "train")
    assert not (tmp_path.parent / "evil.bin").exists()


def test_archive_with_a_link(tmp_path, splits):
    path = write_cifar_archive(tmp_path, "binary", {"test": splits["test"]})
    # Append a symlink named like the file the reader wants.
    with tarfile.open(path, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members:
            tar.addfile(member, __import__("io").BytesIO(data))
        link = tarfile.TarInfo("cifar-100-binary/train.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ValueError, match=r"'cifar-100-binary/train\.bin' is a link"):
        read_cifar100(path, "train")


def test_not_cifar(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_cifar100(tmp_path / "missing.tar.gz")
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="holds no CIFAR-100"):
        read_cifar100(tmp_path / "other")
    with pytest.raises(ValueError, match="`split` must be one of"):
        read_cifar100(tmp_path, "validation")


def test_archive_without_the_split(tmp_path, splits):
    path = write_cifar_archive(tmp_path, "binary", {"test": splits["test"]})
    with pytest.raises(ValueError, match=r"holds neither cifar-100-binary/train\.bin"):
        read_cifar100(path, "train")


def test_tfds_offline_error_says_how_to_pass_a_local_archive(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(network, "unreachable", lambda url: None)

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(OSError, match=r"Could not get cifar100 from TFDS.*data_dir"):
        load_cifar100("train")


def test_tfds_source(monkeypatch, tmp_path):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    images, fine, _ = cifar_arrays(5)
    seen = {}

    def fake_load(name, **kwargs):
        seen.update(kwargs, name=name)
        return (tf.constant(images), tf.constant(fine))

    monkeypatch.setattr(tfds, "load", fake_load)
    monkeypatch.setattr(network, "unreachable", lambda url: None)
    (tmp_path / "cifar100").mkdir()  # A TFDS data dir.
    read_images, read_labels = load_cifar100("test", data_dir=tmp_path)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, fine)
    assert seen["name"] == "cifar100" and seen["split"] == "test"
    assert seen["data_dir"] == str(tmp_path)


def test_offline_without_a_prepared_dataset_fails_at_once(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds

    def must_not_download(*args, **kwargs):
        raise AssertionError("tfds.load was called")

    monkeypatch.setattr(tfds, "load", must_not_download)
    # A proxy on a closed local port: the connection is refused at once,
    # whatever this machine's network.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    started = time.perf_counter()
    with pytest.raises(OSError, match=r"cannot be downloaded: 127\.0\.0\.1:9 cannot"):
        load_cifar100_tfds("train", data_dir=str(tmp_path))
    assert time.perf_counter() - started < 10


def test_the_network_check_follows_the_proxy_settings(monkeypatch):
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert network._endpoint("https://www.cs.toronto.edu/x") == (
        "www.cs.toronto.edu",
        443,
    )
    monkeypatch.setenv("https_proxy", "proxy.example:3128")
    assert network._endpoint("https://www.cs.toronto.edu/x") == ("proxy.example", 3128)


def test_constants_match_the_design():
    assert cifar100.MEAN == (0.5071, 0.4865, 0.4409)
    assert cifar100.STD == (0.2673, 0.2564, 0.2762)
