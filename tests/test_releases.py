"""Damaged downloads: the whole gzip stream's CRC, zip member CRCs, and the
official releases' published MD5s."""

import gzip
import os
import warnings
import zipfile

import numpy as np
import pytest
from data_fixtures import MARKET, cifar_arrays, jpeg, market_name, write_cifar_archive

from keras_dml.data import read_cifar100, read_market1501, releases


@pytest.fixture(autouse=True)
def _forget_checked_files():
    releases._checked.clear()
    yield
    releases._checked.clear()


def _archive(tmp_path, kind="python"):
    splits = {"train": cifar_arrays(64, seed=1), "test": cifar_arrays(16, seed=2)}
    return write_cifar_archive(tmp_path, kind, splits)


def _flip(path, offset, count):
    data = bytearray(open(path, "rb").read())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _deflate_offset(path):
    """An offset inside the deflate data: past the gzip header, before the
    8-byte trailer."""
    size = os.path.getsize(path)
    return size // 2


@pytest.mark.parametrize("kind", ["python", "binary"])
def test_altered_compressed_bytes_are_refused(tmp_path, kind):
    path = _archive(tmp_path, kind)
    _flip(path, _deflate_offset(path), 64)
    with pytest.raises(ValueError, match=f"{os.path.basename(path)}: damaged"):
        read_cifar100(path, "train")


def test_stored_blocks_altered_are_caught_by_the_crc(tmp_path):
    # Random pixels do not compress: gzip stores them, and bytes flipped in a
    # stored block decode without any deflate error. Only the CRC of the
    # whole stream notices.
    raw = tmp_path / "plain.tar"
    path = _archive(tmp_path)
    with gzip.open(path, "rb") as f:
        raw.write_bytes(f.read())
    stored = tmp_path / "cifar-100-python.tar.gz"
    with open(raw, "rb") as f, gzip.open(stored, "wb", compresslevel=0) as out:
        out.write(f.read())
    images, _ = read_cifar100(str(stored), "train")
    _flip(stored, os.path.getsize(stored) // 2, 64)
    with pytest.raises(ValueError, match="damaged.*CRC"):
        read_cifar100(str(stored), "train")
    assert images.shape == (64, 32, 32, 3)


def test_truncated_archive_is_refused(tmp_path):
    path = _archive(tmp_path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 5])
    with pytest.raises(ValueError, match="damaged, truncated"):
        read_cifar100(path, "test")


def test_the_official_release_passes_silently(tmp_path, monkeypatch):
    path = _archive(tmp_path)
    official = releases.Release(releases.md5_of(path), os.path.getsize(path), "url")
    monkeypatch.setitem(releases.OFFICIAL, os.path.basename(path), official)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_cifar100(path, "train")


def test_official_size_with_another_md5_is_a_damaged_copy(tmp_path, monkeypatch):
    path = _archive(tmp_path)
    official = releases.Release(
        "0" * 32, os.path.getsize(path), "https://example/c.tgz"
    )
    monkeypatch.setitem(releases.OFFICIAL, os.path.basename(path), official)
    with pytest.raises(ValueError) as error:
        read_cifar100(path, "train")
    message = str(error.value)
    assert path in message and "0" * 32 in message and releases.md5_of(path) in message
    assert "Download it again from https://example/c.tgz" in message


def test_a_repacked_archive_is_accepted_with_a_note(tmp_path):
    path = _archive(tmp_path)  # Our own packing of the official file name.
    with pytest.warns(releases.RepackedArchiveWarning, match="repacked archive"):
        images, labels = read_cifar100(path, "train")
    assert len(images) == len(labels) == 64
    # Checked once per file: the test split reads without a second note.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_cifar100(path, "test")


def _market_zip(path):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(4):
            zf.writestr(f"{MARKET}/query/{market_name(i + 1, 1, i)}", jpeg(i))
            zf.writestr(
                f"{MARKET}/bounding_box_train/{market_name(i + 1, 2, i)}", jpeg(i)
            )
    return path


def test_a_damaged_market_zip_of_the_official_name_is_refused(tmp_path):
    path = _market_zip(tmp_path / f"{MARKET}.zip")
    data = bytearray(path.read_bytes())
    member = data.find(b"JFIF") + 200  # Inside the first stored JPEG.
    data[member : member + 16] = bytes(16)
    path.write_bytes(bytes(data))
    with pytest.raises(
        ValueError, match=r"is damaged \(member .* CRC.*Download it again"
    ):
        read_market1501(path, "train")


def test_a_damaged_member_of_another_zip_is_named_when_read(tmp_path):
    import tensorflow as tf  # noqa: F401  (market1501_dataset needs it)

    from keras_dml.data import market1501_dataset

    path = _market_zip(tmp_path / "market.zip")
    data = bytearray(path.read_bytes())
    member = data.find(b"JFIF") + 200
    data[member : member + 16] = bytes(16)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged"):
        market1501_dataset(path, "query", image_size=(32, 16), batch_size=2)
    assert np.all(read_market1501(path, "train").person_ids > 0)
