"""MNIST (LeCun, Cortes and Burges): 70,000 28x28 grayscale handwritten
digits, 60,000 for training and 10,000 for testing.

Read from either form it is distributed in:
- the four IDX files (`keras_dml.data.idx`), gzipped or not, in a folder;
- keras's `mnist.npz` (what `keras.datasets.mnist` downloads into
  `~/.keras/datasets/`), read without pickle.

Without `--data_dir`, keras's cache is used when it holds `mnist.npz`, else
`keras.datasets.mnist` downloads it when the host answers within seconds;
else the run fails at once and says how to get the files. (Debian packages no
MNIST.) The official `.gz` files' published MD5s are checked; a file of
another MD5 whose gzip stream is intact is used with a warning (a recompressed
copy). No decompressed MD5 is published: a plain IDX file is checked by its
header and length.

This module is the whole dataset: reader, loader, defaults and its registry
entry (`--dataset=mnist`).
"""

import os
import warnings

import numpy as np

from keras_dml.data import idx, network, releases
from keras_dml.datasets import registry

NAME = "mnist"
NUM_CLASSES = 10
MEAN, STD = (0.1307,), (0.3081,)
NPZ = "mnist.npz"
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
# The published MD5s of the official gzipped files.
OFFICIAL_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
DOWNLOAD_HINT = (
    'Get MNIST online with `python -c "import keras; '
    'keras.datasets.mnist.load_data()"` (into ~/.keras/datasets/mnist.npz), or '
    "pass a folder holding mnist.npz or the four IDX files "
    "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) as --data_dir."
)
_NPZ_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}


def _check_gz_md5(folder, split):
    for path in idx.find_files(folder, split):
        expected = OFFICIAL_GZ_MD5.get(os.path.basename(path))
        if expected is None:
            continue
        digest = releases.md5_of(path)
        if digest != expected:
            # idx.read_split still checks the gzip CRC: a damaged file fails there.
            warnings.warn(
                f"{path} is not the official {os.path.basename(path)} (MD5 "
                f"{digest}, official {expected}); using it if it reads back intact.",
                releases.RepackedArchiveWarning,
                stacklevel=4,
            )


def read_npz(path, split):
    """A split of keras's `mnist.npz`, its arrays checked."""
    if split not in _NPZ_KEYS:
        raise ValueError(
            f"`split` must be one of {tuple(_NPZ_KEYS)}. Received: split={split!r}"
        )
    images_key, labels_key = _NPZ_KEYS[split]
    try:
        with np.load(path, allow_pickle=False) as content:
            images, labels = content[images_key], content[labels_key]
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise ValueError(
            f"{path}: not a readable mnist.npz with {images_key} and {labels_key} "
            f"({error}). {DOWNLOAD_HINT}"
        ) from None
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{path}: {images_key} must be uint8 [N, 28, 28]. Received: "
            f"{images.dtype} {images.shape}"
        )
    if labels.shape != (len(images),):
        raise ValueError(
            f"{path}: {len(images):,} images in {images_key} but {labels.size:,} "
            f"labels in {labels_key}."
        )
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"{path}: {labels_key} must hold labels in 0..9.")
    return images[..., np.newaxis], labels.astype(np.int64)


def read_mnist(path, split="train"):
    """Reads an MNIST split.

    Args:
        path: `mnist.npz`, or a folder holding it or the four IDX files.
        split: "train" (60,000 images) or "test" (10,000).

    Returns:
        `(images, labels)`: uint8 `[N, 28, 28, 1]` and int64 labels in 0..9.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: no MNIST there, or a file is damaged or inconsistent.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"MNIST path {path!r} does not exist. {DOWNLOAD_HINT}")
    if os.path.isfile(path):
        return read_npz(path, split)
    if idx.holds_split(path, split):
        _check_gz_md5(path, split)
        return idx.read_split(path, split, num_classes=NUM_CLASSES, hint=DOWNLOAD_HINT)
    if os.path.isfile(os.path.join(path, NPZ)):
        return read_npz(os.path.join(path, NPZ), split)
    # Names the missing IDX file.
    return idx.read_split(path, split, num_classes=NUM_CLASSES, hint=DOWNLOAD_HINT)


def _download():
    problem = network.unreachable(KERAS_URL)
    if problem is not None:
        raise ValueError(
            f"MNIST is not in keras's cache and cannot be downloaded ({problem}). "
            f"{DOWNLOAD_HINT}"
        )
    import keras  # Here only: reading the files needs no Keras.

    keras.datasets.mnist.load_data()  # Downloads and checks mnist.npz's SHA-256.
    return os.path.join(idx.keras_cache(""), NPZ)


def load_mnist(split, data_dir=None):
    """A split from `data_dir`, else keras's cache, else downloaded through
    `keras.datasets` (offline: said within seconds)."""
    if data_dir is None:
        cached = os.path.join(idx.keras_cache(""), NPZ)
        data_dir = cached if os.path.isfile(cached) else _download()
    return read_mnist(data_dir, split)


# A 2-pixel shift, no flip: mirrored digits are other shapes.
_load = registry.array_loader(
    load_mnist, NUM_CLASSES, MEAN, STD, (28, 28, 1), padding=2, flip=False
)


DATASET = registry.register(
    registry.Dataset(
        NAME,
        registry.Top1,
        idx.DEFAULTS,
        registry.SMOKE,
        _load,
        "MNIST (keras's mnist.npz, cached or downloaded, or --data_dir with it or "
        "its IDX files)",
        DOWNLOAD_HINT,
        settings=(registry.TRAIN_SIZE, registry.VALIDATION_SIZE),
    )
)
