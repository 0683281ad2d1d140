"""The IDX format of MNIST and Fashion-MNIST: reading and checking the files.

A file is a 4-byte big-endian magic number (0x00000803: unsigned bytes, 3
dimensions, images; 0x00000801: unsigned bytes, 1 dimension, labels), one
4-byte big-endian size per dimension, then the bytes, row-major. A dataset is
four such files, usually gzipped:

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

Every file is checked before it is used: a gzip stream's CRC and length (a
damaged or truncated download), the header (magic number, dimensions), the
length the header implies, images and labels of the same split agreeing in
number, labels within the classes, and, where the dataset publishes them, the
MD5 of the decompressed bytes of an official file (a copy changed in place).
Each problem names its file.
"""

import gzip
import hashlib
import os
import struct
import zlib
from typing import NamedTuple

import numpy as np

SPLITS = ("train", "test")
_PREFIX = {"train": "train", "test": "t10k"}
_IMAGES, _LABELS = 0x00000803, 0x00000801


class OfficialFile(NamedTuple):
    """What the official copy of one file decompresses to."""

    size: int  # Bytes, decompressed.
    md5: str | None  # MD5 of the decompressed bytes; None where none is known.


def file_names(split):
    """The (images, labels) base names of `split`, without `.gz`."""
    prefix = _PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def find_files(folder, split):
    """Paths of `split`'s (images, labels) files in `folder`, gzipped or not,
    or None for a file that is not there."""
    found = []
    for name in file_names(split):
        paths = [os.path.join(folder, n) for n in (f"{name}.gz", name)]
        found.append(next((p for p in paths if os.path.isfile(p)), None))
    return tuple(found)


def _read_bytes(path):
    """The decompressed bytes of `path` (gzip when it starts with gzip's
    magic, whatever its name)."""
    name = os.path.basename(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        # gzip checks the whole stream's CRC and length at its end.
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(
            f"{path}: damaged or truncated gzip file ({error}); {name} must be "
            "downloaded again."
        ) from None


def parse(data, path, magic, dims):
    """The array in the IDX bytes `data` of `path`, checked to be `dims`-
    dimensional unsigned bytes with magic number `magic`."""
    header = 4 + 4 * dims
    if len(data) < header:
        raise ValueError(
            f"{path}: {len(data)} bytes is shorter than an IDX header "
            f"({header} bytes); the file is truncated or not IDX."
        )
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        kind = "images" if magic == _IMAGES else "labels"
        raise ValueError(
            f"{path}: magic number 0x{found:08x}, expected 0x{magic:08x} (IDX "
            f"{kind}, unsigned bytes, {dims} dimension{'s' * (dims > 1)}); the "
            "file is not what its name says."
        )
    shape = struct.unpack(f">{dims}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        dimensions = " x ".join(map(str, shape))
        raise ValueError(
            f"{path}: {len(data):,} bytes, but its header ({dimensions}) means "
            f"{expected:,}; the file is truncated or damaged."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _check_official(data, path, official):
    if official is None or official.md5 is None or len(data) != official.size:
        return  # Not an official file's size: a subset or a file of one's own.
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if digest != official.md5:
        raise ValueError(
            f"{path} is damaged (bytes changed in place): its decompressed MD5 is "
            f"{digest}, the official file's is {official.md5}. Get the file again."
        )


def read_split(folder, split, *, num_classes=10, official=None, hint=""):
    """Reads one split of an IDX dataset from `folder`.

    Args:
        folder: a folder holding the four files (gzipped or not).
        split: "train" or "test".
        num_classes: labels must be in `0..num_classes-1`.
        official: `{base name: OfficialFile}` of the dataset's official files.
        hint: said when a file is missing (how to get the files).

    Returns:
        `(images, labels)`: uint8 `[N, rows, cols, 1]` and int64 `[N]`.

    Raises:
        ValueError: a file is missing, damaged, truncated or inconsistent;
            the message names it.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    official = official or {}
    images_path, labels_path = find_files(folder, split)
    for path, name in zip((images_path, labels_path), file_names(split)):
        if path is None:
            raise ValueError(
                f"{folder} has no {name}.gz (or {name}) for the {split} split. {hint}"
            )
    arrays = []
    for path, name, magic, dims in (
        (images_path, file_names(split)[0], _IMAGES, 3),
        (labels_path, file_names(split)[1], _LABELS, 1),
    ):
        data = _read_bytes(path)
        array = parse(data, path, magic, dims)
        _check_official(data, path, official.get(name))
        arrays.append(array)
    images, labels = arrays
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds {len(images):,} images but {labels_path} "
            f"{len(labels):,} labels; the two files are from different copies."
        )
    if len(labels) == 0:
        raise ValueError(f"{labels_path}: the {split} split holds no examples.")
    if labels.max() >= num_classes:
        raise ValueError(
            f"{labels_path}: label {int(labels.max())} found; labels must be in "
            f"0..{num_classes - 1}."
        )
    return images[..., np.newaxis], labels.astype(np.int64)


def keras_cache(subdir):
    """Where `keras.datasets` keeps its downloads (`KERAS_HOME`, else
    `~/.keras`), joined with `subdir`."""
    home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    return os.path.join(home, "datasets", subdir)


def holds_split(folder, split):
    """Whether `folder` holds both files of `split`."""
    return os.path.isdir(folder) and None not in find_files(folder, split)


# The starting settings of MNIST and Fashion-MNIST (`--dataset=...`): not
# tuned; 5,000 of the 60,000 training images held out for every choice made
# while developing, the test set only reported.
DEFAULTS = {
    "peers": ("resnet20", "resnet20"),
    "epochs": 30,
    "batch_size": 128,
    "optimizer": "sgd",
    "lr": 0.1,
    "lr_schedule": "piecewise",
    "lr_milestones": (15, 25),
    "weight_decay": 5e-4,
    "validation_size": 5000,
    "train_size": None,
}
