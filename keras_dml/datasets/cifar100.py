"""CIFAR-100: reading the original archives (binary or python format) and TFDS.

Format (https://www.cs.toronto.edu/~kriz/cifar.html):
- binary: `cifar-100-binary/{train,test}.bin`, records of 3,074 bytes: coarse
  label, fine label, then 1,024 red, 1,024 green and 1,024 blue pixel bytes
  (each 32x32, row-major).
- python: `cifar-100-python/{train,test}` pickles of a dict with `b"data"`
  (N x 3,072 uint8, same pixel order) and `b"fine_labels"`.
"""

import os

import numpy as np

from keras_dml.data import archives, network
from keras_dml.data.arrays import array_dataset
from keras_dml.data.normalization import NORMALIZATIONS
from keras_dml.data.safe_pickle import load_numpy_pickle
from keras_dml.datasets import registry

NUM_CLASSES = 100
NUM_COARSE_CLASSES = 20
NUM_EXAMPLES = {"train": 50_000, "test": 10_000}
SPLITS = ("train", "test")
IMAGE_SHAPE = (32, 32, 3)
MEAN, STD = NORMALIZATIONS["cifar100"]

_PIXELS = 32 * 32 * 3
_RECORD_BYTES = 2 + _PIXELS
_BINARY_FOLDER = "cifar-100-binary"
_PYTHON_FOLDER = "cifar-100-python"
_ARCHIVES = (f"{_BINARY_FOLDER}.tar.gz", f"{_PYTHON_FOLDER}.tar.gz")
DOWNLOAD_HINT = (
    "Download cifar-100-binary.tar.gz or cifar-100-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and pass its path (or the folder "
    "it extracts to) as data_dir / --data_dir."
)


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")


def _member_names(split):
    return {
        "binary": f"{_BINARY_FOLDER}/{split}.bin",
        "python": f"{_PYTHON_FOLDER}/{split}",
    }


def to_hwc(pixels):
    """N x 3072 planar (R, G, B planes) -> N x 32 x 32 x 3, contiguous."""
    return np.ascontiguousarray(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def check_labels(labels, filename, limit, kind):
    bad = np.flatnonzero((labels < 0) | (labels >= limit))
    if bad.size:
        raise ValueError(
            f"{filename}: {kind} label {int(labels[bad[0]])} at record {bad[0]:,} "
            f"is outside 0..{limit - 1} ({bad.size:,} such records); the file is "
            "corrupt or not CIFAR-100."
        )


def parse_binary(data, filename):
    """Images and fine labels from the bytes of a `train.bin` / `test.bin`."""
    if len(data) == 0 or len(data) % _RECORD_BYTES:
        raise ValueError(
            f"{filename}: {len(data):,} bytes is not a positive multiple of the "
            f"{_RECORD_BYTES:,}-byte record; the file is truncated or not CIFAR-100 "
            "binary."
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD_BYTES)
    coarse, fine = records[:, 0], records[:, 1]
    check_labels(coarse, filename, NUM_COARSE_CLASSES, "coarse")
    check_labels(fine, filename, NUM_CLASSES, "fine")
    return to_hwc(records[:, 2:]), fine.astype(np.int64)


def parse_python(data, filename):
    """Images and fine labels from the bytes of a python-format `train` / `test`."""
    content = load_numpy_pickle(data, filename)
    if not isinstance(content, dict) or b"data" not in content:
        raise ValueError(
            f"{filename}: expected a dict with keys b'data' and b'fine_labels'. "
            f"Received: {type(content).__name__}"
            + (f" with keys {sorted(content)[:5]}" if isinstance(content, dict) else "")
        )
    pixels = content[b"data"]
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.ndim != 2
        or pixels.shape[1] != _PIXELS
    ):
        raise ValueError(
            f"{filename}: b'data' must be a uint8 array of shape (N, {_PIXELS}). "
            f"Received: {getattr(pixels, 'dtype', type(pixels).__name__)} "
            f"{getattr(pixels, 'shape', '')}"
        )
    try:
        fine = np.asarray(content[b"fine_labels"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{filename}: b'fine_labels' is missing or not a list of integers."
        ) from error
    if fine.shape != (pixels.shape[0],):
        raise ValueError(
            f"{filename}: {pixels.shape[0]:,} images but b'fine_labels' has shape "
            f"{fine.shape}."
        )
    check_labels(fine, filename, NUM_CLASSES, "fine")
    return to_hwc(pixels), fine


def _read_file(path):
    with open(path, "rb") as f:
        return f.read()


def _read_archive(path, split):
    members = _member_names(split)
    found, names = archives.read_tar_members(path, set(members.values()))
    if members["binary"] in found:
        return parse_binary(found[members["binary"]], f"{split}.bin")
    if members["python"] in found:
        return parse_python(found[members["python"]], split)
    raise ValueError(
        f"{os.path.basename(path)}: holds neither {members['binary']} nor "
        f"{members['python']}. It holds: {sorted(names)[:8]}. {DOWNLOAD_HINT}"
    )


def find_cifar100(path):
    """What `path` holds: ("archive" | "binary" | "python", resolved path), or None.

    `path` may be an archive, an extracted `cifar-100-binary` / `cifar-100-python`
    folder, or a folder that holds one of those or an archive.
    """
    path = os.fspath(path)
    if archives.is_tar_archive(path):
        return "archive", path
    if not os.path.isdir(path):
        return None
    if os.path.isfile(os.path.join(path, "train.bin")):
        return "binary", path
    if os.path.isfile(os.path.join(path, "meta")):
        return "python", path
    for folder, kind in ((_BINARY_FOLDER, "binary"), (_PYTHON_FOLDER, "python")):
        if os.path.isdir(os.path.join(path, folder)):
            return find_cifar100(os.path.join(path, folder)) or (kind, path)
    for name in _ARCHIVES:
        if os.path.isfile(os.path.join(path, name)):
            return "archive", os.path.join(path, name)
    return None


def read_cifar100(path, split="train"):
    """Reads a CIFAR-100 split from the original files.

    Args:
        path: `cifar-100-binary.tar.gz`, `cifar-100-python.tar.gz`, either
            extracted folder, or a folder holding one of these. Archives are read
            in memory, never extracted.
        split: "train" (50,000 images) or "test" (10,000).

    Returns:
        `(images, labels)`: uint8 `[N, 32, 32, 3]` and int64 fine labels `[N]`
        in 0..99, in file order.

    Raises:
        ValueError: the path holds no CIFAR-100, or a file is truncated, corrupt,
            unsafe (archive members outside the folder, links, pickles that would
            run code) or has labels outside 0..99. The message names the file.
        FileNotFoundError: `path` does not exist.
    """
    _check_split(split)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"CIFAR-100 path {path!r} does not exist. {DOWNLOAD_HINT}"
        )
    found = find_cifar100(path)
    if found is None:
        raise ValueError(
            f"{path!r} holds no CIFAR-100: expected {_ARCHIVES[0]}, {_ARCHIVES[1]}, "
            f"or the {_BINARY_FOLDER}/ or {_PYTHON_FOLDER}/ folder they extract to."
        )
    kind, where = found
    if kind == "archive":
        return _read_archive(where, split)
    if kind == "binary":
        filename = os.path.join(where, f"{split}.bin")
        if not os.path.isfile(filename):
            raise ValueError(f"{where}: has no {split}.bin. {DOWNLOAD_HINT}")
        return parse_binary(_read_file(filename), os.path.basename(filename))
    filename = os.path.join(where, split)
    if not os.path.isfile(filename):
        raise ValueError(f"{where}: has no {split} pickle. {DOWNLOAD_HINT}")
    return parse_python(_read_file(filename), split)


def is_tfds_data_dir(path):
    """True if `path` is a TFDS data dir that already holds a prepared cifar100."""
    return os.path.isdir(os.path.join(os.fspath(path), "cifar100"))


TFDS_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"


def _tfds_prepared(tfds, name, data_dir):
    from absl import logging

    # TFDS warns through absl about every version folder it does not find.
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        return tfds.builder(name, data_dir=data_dir).is_prepared()
    except Exception:  # Any trouble reading the local metadata: not usable.
        return False
    finally:
        logging.set_verbosity(verbosity)


def load_cifar100_tfds(split, data_dir=None):
    """The split as numpy arrays from TFDS `cifar100` (downloads when online).

    Raises:
        OSError: the download failed or cannot work (offline: said within
            seconds, not after TFDS's retries); says how to pass a local
            archive.
    """
    _check_split(split)
    return load_tfds("cifar100", split, TFDS_URL, DOWNLOAD_HINT, data_dir)


def load_tfds(name, split, url, hint, data_dir=None):
    """A TFDS image dataset's split as uint8 images and int64 labels; a
    download that cannot work offline fails at once with `hint`."""
    import tensorflow_datasets as tfds  # Slow to import; only this path needs it.

    if not _tfds_prepared(tfds, name, data_dir):
        problem = network.unreachable(url)
        if problem is not None:
            raise OSError(
                f"{name} is not in the TFDS data dir and cannot be downloaded: "
                f"{problem}. Without internet: {hint}"
            )
    try:
        images, labels = tfds.as_numpy(
            tfds.load(
                name,
                split=split,
                batch_size=-1,
                as_supervised=True,
                data_dir=data_dir,
            )
        )
    except (OSError, ImportError, tfds.download.DownloadError) as error:
        raise OSError(
            f"Could not get {name} from TFDS ({type(error).__name__}: {error}). "
            f"Without internet: {hint}"
        ) from error
    return images.astype(np.uint8), labels.astype(np.int64)


def load_cifar100(split, data_dir=None):
    """Images and labels of a split, from a local copy when `data_dir` names one,
    else from TFDS (`data_dir` may also be a TFDS data dir holding `cifar100/`)."""
    _check_split(split)
    if data_dir is None:
        return load_cifar100_tfds(split)
    data_dir = os.fspath(data_dir)
    if not os.path.exists(data_dir):
        raise FileNotFoundError(
            f"data_dir {data_dir!r} does not exist. {DOWNLOAD_HINT}"
        )
    if find_cifar100(data_dir) is None and is_tfds_data_dir(data_dir):
        return load_cifar100_tfds(split, data_dir=data_dir)
    return read_cifar100(data_dir, split)


def cifar100_dataset(
    split,
    *,
    data_dir=None,
    batch_size=64,
    augment=None,
    shuffle=None,
    seed=None,
    drop_remainder=None,
    epochs=None,
    initial_epoch=0,
    input_context=None,
):
    """A CIFAR-100 `tf.data.Dataset` of `(normalized images, labels)` batches.

    Training (`split="train"`) defaults to shuffling, augmentation (4-pixel pad,
    random 32x32 crop, horizontal flip) and dropping the last partial batch;
    "test" to none of these. Images are normalized with the per-channel
    CIFAR-100 mean and std.

    Args:
        split: "train" or "test".
        data_dir: a CIFAR-100 archive or extracted folder (see `read_cifar100`),
            or a TFDS data dir; None downloads TFDS `cifar100` when online.
        batch_size: the global batch size.
        augment, shuffle, drop_remainder: None for the split's defaults.
        seed: with a seed, the order and augmentation of epoch e are a function
            of (seed, e) alone.
        epochs: None yields one epoch per iteration (a plain `fit(ds, epochs=n)`
            works and reshuffles each epoch). An int yields epochs
            `initial_epoch .. epochs-1` back to back, each exactly as an
            uninterrupted run sees it: use it to resume, with
            `fit(..., steps_per_epoch=steps_per_epoch(50_000, batch_size),
            initial_epoch=initial_epoch)`.
        initial_epoch: first epoch when `epochs` is given.
        input_context: for `strategy.distribute_datasets_from_function`: the
            dataset yields this worker's per-replica batches.

    Example:

    ```python
    train = keras_dml.data.cifar100_dataset(
        "train", data_dir="cifar-100-python.tar.gz", seed=0
    )
    test = keras_dml.data.cifar100_dataset("test", data_dir="cifar-100-python.tar.gz")
    model.fit(train, validation_data=test, epochs=200)
    ```
    """
    _check_split(split)
    training = split == "train"
    images, labels = load_cifar100(split, data_dir)
    return array_dataset(
        images,
        labels,
        batch_size=batch_size,
        mean=MEAN,
        std=STD,
        augment=training if augment is None else augment,
        shuffle=training if shuffle is None else shuffle,
        seed=seed,
        padding=4,
        drop_remainder=training if drop_remainder is None else drop_remainder,
        epochs=epochs,
        initial_epoch=initial_epoch,
        input_context=input_context,
    )


# The paper's CIFAR settings (cifar10 takes them too).
DEFAULTS = {
    # The paper's: 200 epochs, batch 64, SGD with Nesterov momentum 0.9, lr 0.1
    # divided by 10 after epochs 60, 120 and 180; weight decay 5e-4.
    "peers": ("resnet32", "resnet32"),
    "epochs": 200,
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.1,
    "lr_schedule": "piecewise",
    "lr_milestones": (60, 120, 180),
    "weight_decay": 5e-4,
    # The paper reports the test set after training; 0 keeps that.
    "validation_size": 0,
}


DATASET = registry.register(
    registry.Dataset(
        "cifar100",
        registry.Top1,
        DEFAULTS,
        registry.SMALL,
        registry.array_loader(
            load_cifar100, 100, MEAN, STD, (32, 32, 3), padding=4, flip=True
        ),
        "CIFAR-100 (the archive, its folder, or TFDS without --data_dir)",
        DOWNLOAD_HINT,
        settings=(registry.VALIDATION_SIZE,),
    )
)
