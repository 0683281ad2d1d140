"""CIFAR-10: reading the original archives (binary or python format) and TFDS.

Format (https://www.cs.toronto.edu/~kriz/cifar.html):
- binary: `cifar-10-batches-bin/data_batch_{1..5}.bin` and `test_batch.bin`,
  records of 3,073 bytes: the label, then 1,024 red, 1,024 green and 1,024
  blue pixel bytes (each 32x32, row-major).
- python: `cifar-10-batches-py/data_batch_{1..5}` and `test_batch`, pickles of
  a dict with `b"data"` (N x 3,072 uint8, same pixel order) and `b"labels"`.

Archives are read in memory with the same safety as CIFAR-100's: the whole
gzip stream's CRC, the official release's MD5, no member outside its folder,
pickles that can only rebuild numpy arrays.
"""

import os

import numpy as np

from keras_dml.data import archives
from keras_dml.data.safe_pickle import load_numpy_pickle
from keras_dml.datasets import cifar100, registry

NUM_CLASSES = 10
SPLITS = ("train", "test")
# CIFAR-10's per-channel statistics (pixels in [0, 1]).
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

_PIXELS = 32 * 32 * 3
_RECORD_BYTES = 1 + _PIXELS
_BINARY_FOLDER = "cifar-10-batches-bin"
_PYTHON_FOLDER = "cifar-10-batches-py"
_ARCHIVES = ("cifar-10-binary.tar.gz", "cifar-10-python.tar.gz")
_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
TFDS_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
DOWNLOAD_HINT = (
    "Download cifar-10-binary.tar.gz or cifar-10-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and pass its path (or the folder "
    "it extracts to) as data_dir / --data_dir."
)


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")


def parse_binary(data, filename):
    """Images and labels from the bytes of one `*_batch*.bin`."""
    if len(data) == 0 or len(data) % _RECORD_BYTES:
        raise ValueError(
            f"{filename}: {len(data):,} bytes is not a positive multiple of the "
            f"{_RECORD_BYTES:,}-byte record; the file is truncated or not CIFAR-10 "
            "binary."
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD_BYTES)
    labels = records[:, 0]
    cifar100.check_labels(labels, filename, NUM_CLASSES, "")
    return cifar100.to_hwc(records[:, 1:]), labels.astype(np.int64)


def parse_python(data, filename):
    """Images and labels from the bytes of one python-format batch."""
    content = load_numpy_pickle(data, filename)
    if not isinstance(content, dict) or b"data" not in content:
        raise ValueError(
            f"{filename}: expected a dict with keys b'data' and b'labels'."
        )
    pixels = content[b"data"]
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.shape[1:] != (_PIXELS,)
    ):
        raise ValueError(
            f"{filename}: b'data' must be a uint8 array of shape (N, 3072)."
        )
    try:
        labels = np.asarray(content[b"labels"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{filename}: b'labels' is missing or not integers."
        ) from error
    if labels.shape != (len(pixels),):
        raise ValueError(
            f"{filename}: {len(pixels):,} images but {labels.size:,} labels."
        )
    cifar100.check_labels(labels, filename, NUM_CLASSES, "")
    return cifar100.to_hwc(pixels), labels


def _combine(parts):
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _from_archive(path, split):
    wanted = {f"{_BINARY_FOLDER}/{n}.bin" for n in _FILES[split]}
    wanted |= {f"{_PYTHON_FOLDER}/{n}" for n in _FILES[split]}
    found, names = archives.read_tar_members(path, wanted)
    binary = [f"{_BINARY_FOLDER}/{n}.bin" for n in _FILES[split]]
    python = [f"{_PYTHON_FOLDER}/{n}" for n in _FILES[split]]
    if all(n in found for n in binary):
        return _combine([parse_binary(found[n], n) for n in binary])
    if all(n in found for n in python):
        return _combine([parse_python(found[n], n) for n in python])
    raise ValueError(
        f"{os.path.basename(path)}: holds neither {_BINARY_FOLDER}/ nor "
        f"{_PYTHON_FOLDER}/ with the {split} batches. It holds: {sorted(names)[:8]}. "
        f"{DOWNLOAD_HINT}"
    )


def _from_folder(folder, split):
    binary = [os.path.join(folder, f"{n}.bin") for n in _FILES[split]]
    python = [os.path.join(folder, n) for n in _FILES[split]]
    if all(os.path.isfile(p) for p in binary):
        return _combine([parse_binary(_read(p), os.path.basename(p)) for p in binary])
    if all(os.path.isfile(p) for p in python):
        return _combine([parse_python(_read(p), os.path.basename(p)) for p in python])
    return None


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def read_cifar10(path, split="train"):
    """Reads a CIFAR-10 split from the original files.

    Args:
        path: `cifar-10-binary.tar.gz`, `cifar-10-python.tar.gz`, either
            extracted folder, or a folder holding one of these.
        split: "train" (50,000 images) or "test" (10,000).

    Returns:
        `(images, labels)`: uint8 `[N, 32, 32, 3]` and int64 labels in 0..9.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` holds no CIFAR-10, or a file is damaged or unsafe.
    """
    _check_split(split)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"CIFAR-10 path {path!r} does not exist. {DOWNLOAD_HINT}"
        )
    if archives.is_tar_archive(path):
        return _from_archive(path, split)
    if os.path.isdir(path):
        for candidate in (
            path,
            *(os.path.join(path, f) for f in (_BINARY_FOLDER, _PYTHON_FOLDER)),
        ):
            if os.path.isdir(candidate):
                found = _from_folder(candidate, split)
                if found is not None:
                    return found
        for name in _ARCHIVES:
            if os.path.isfile(os.path.join(path, name)):
                return _from_archive(os.path.join(path, name), split)
    raise ValueError(
        f"{path!r} holds no CIFAR-10: expected {_ARCHIVES[0]}, {_ARCHIVES[1]}, or "
        f"the {_BINARY_FOLDER}/ or {_PYTHON_FOLDER}/ folder they extract to."
    )


def load_cifar10(split, data_dir=None):
    """A split from a local copy when `data_dir` names one, else from TFDS
    `cifar10` (which downloads it; offline, said within seconds)."""
    _check_split(split)
    if data_dir is not None:
        return read_cifar10(data_dir, split)
    return cifar100.load_tfds("cifar10", split, TFDS_URL, DOWNLOAD_HINT)


DATASET = registry.register(
    registry.Dataset(
        "cifar10",
        registry.Top1,
        cifar100.DEFAULTS,
        registry.SMALL,
        registry.array_loader(
            load_cifar10, 10, MEAN, STD, (32, 32, 3), padding=4, flip=True
        ),
        "CIFAR-10 (the archive, its folder, or TFDS without --data_dir)",
        DOWNLOAD_HINT,
        settings=(registry.VALIDATION_SIZE,),
    )
)
