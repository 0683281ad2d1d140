"""Fashion-MNIST (Xiao, Rasul and Vollgraf, Zalando Research, 2017): 70,000
28x28 grayscale images of 10 clothing classes, 60,000 for training and 10,000
for testing, in MNIST's IDX format (`keras_dml.data.idx`).

Where the files come from, in this order:
1. `--data_dir` / `data_dir`: a folder holding the four IDX files, gzipped or
   not (such as keras's cache, `~/.keras/datasets/fashion-mnist/`).
2. Debian's package `dataset-fashion-mnist` (`apt-get install
   dataset-fashion-mnist`), which installs them in
   `/usr/share/datasets/fashion-mnist/`, or keras's cache when it holds them.
3. `keras.datasets.fashion_mnist`'s download, when the host answers within
   seconds; else the run fails at once and says how to get the files.

The official files' decompressed MD5s recognise both Zalando's copy and
Debian's (recompressed, so its `.gz` MD5s differ): a file of the official size
whose bytes differ is refused as damaged.

This module is the whole dataset: reader, loader, defaults and its registry
entry (`--dataset=fashion_mnist`).
"""

import os

from keras_dml.data import idx, network
from keras_dml.datasets import registry

NAME = "fashion_mnist"
NUM_CLASSES = 10
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Over the 60,000 training images, pixels in [0, 1].
MEAN, STD = (0.2860,), (0.3530,)
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
KERAS_SUBDIR = "fashion-mnist"
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
# Decompressed sizes and MD5s (the same for Zalando's and Debian's copies).
OFFICIAL = {
    "train-images-idx3-ubyte": idx.OfficialFile(
        47_040_016, "f4a8712d7a061bf5bd6d2ca38dc4d50a"
    ),
    "train-labels-idx1-ubyte": idx.OfficialFile(
        60_008, "9018921c3c673c538a1fc5bad174d6f9"
    ),
    "t10k-images-idx3-ubyte": idx.OfficialFile(
        7_840_016, "8181f5470baa50b63fa0f6fddb340f0a"
    ),
    "t10k-labels-idx1-ubyte": idx.OfficialFile(
        10_008, "15d484375f8d13e6eb1aabb0c3f46965"
    ),
}
DOWNLOAD_HINT = (
    "Get Fashion-MNIST with `apt-get install dataset-fashion-mnist` (Debian: "
    f'{DEBIAN_DIR}/), or online with `python -c "import keras; '
    'keras.datasets.fashion_mnist.load_data()"` (into '
    "~/.keras/datasets/fashion-mnist/), or pass a folder holding "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz as --data_dir."
)


def read_fashion_mnist(path, split="train"):
    """Reads a Fashion-MNIST split from a folder of the IDX files.

    Args:
        path: a folder holding `train-images-idx3-ubyte[.gz]` and the other
            three files.
        split: "train" (60,000 images) or "test" (10,000).

    Returns:
        `(images, labels)`: uint8 `[N, 28, 28, 1]` and int64 labels in 0..9.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: a file is missing, damaged, truncated or inconsistent.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"Fashion-MNIST folder {path!r} does not exist. {DOWNLOAD_HINT}"
        )
    return idx.read_split(
        path, split, num_classes=NUM_CLASSES, official=OFFICIAL, hint=DOWNLOAD_HINT
    )


def local_copy():
    """The folder of an installed copy (Debian's, then keras's cache), or None."""
    for folder in (DEBIAN_DIR, idx.keras_cache(KERAS_SUBDIR)):
        if all(idx.holds_split(folder, s) for s in idx.SPLITS):
            return folder
    return None


def _download():
    problem = network.unreachable(KERAS_URL)
    if problem is not None:
        raise ValueError(
            f"Fashion-MNIST is not installed and cannot be downloaded ({problem}). "
            f"{DOWNLOAD_HINT}"
        )
    import keras  # Here only: reading the files needs no Keras.

    keras.datasets.fashion_mnist.load_data()  # Fills keras's cache.
    return idx.keras_cache(KERAS_SUBDIR)


def load_fashion_mnist(split, data_dir=None):
    """A split from `data_dir`, else from an installed copy, else downloaded
    through `keras.datasets` (offline: said within seconds)."""
    folder = data_dir if data_dir is not None else (local_copy() or _download())
    return read_fashion_mnist(folder, split)


# A 2-pixel shift and horizontal flips: a mirrored garment is the same class
# (not so for digits).
_load = registry.array_loader(
    load_fashion_mnist, NUM_CLASSES, MEAN, STD, (28, 28, 1), padding=2, flip=True
)


DATASET = registry.register(
    registry.Dataset(
        NAME,
        registry.Top1,
        idx.DEFAULTS,
        registry.SMOKE,
        _load,
        "Fashion-MNIST (Debian's dataset-fashion-mnist, keras's cache or download, "
        "or --data_dir with its IDX files)",
        DOWNLOAD_HINT,
        settings=(registry.TRAIN_SIZE, registry.VALIDATION_SIZE),
    )
)
