"""Tiny datasets written in the exact original on-disk formats.

CIFAR-100's python files are Python 2 pickles (protocol 2, strings as
BINSTRING, arrays through `numpy.core.multiarray._reconstruct`); the writer
below emits the same opcodes, so the reader is tested on what users have.
"""

import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import tensorflow as tf

CIFAR_BINARY = "cifar-100-binary"
CIFAR_PYTHON = "cifar-100-python"


def cifar_arrays(num_examples, seed=0):
    """Random uint8 images, fine labels (0..99) and coarse labels (0..19)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_examples, 32, 32, 3), dtype=np.uint8)
    fine = rng.integers(0, 100, size=num_examples)
    return images, fine, fine // 5


def _planar(images):
    """N x 32 x 32 x 3 -> N x 3072 (all red, then green, then blue; row-major)."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def cifar_binary_bytes(images, fine, coarse):
    records = np.concatenate(
        [
            coarse[:, None].astype(np.uint8),
            fine[:, None].astype(np.uint8),
            _planar(images),
        ],
        axis=1,
    )
    return records.tobytes()


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (BINSTRING) and numpy's old module name."""

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def python2_pickle(obj):
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar_python_bytes(images, fine, coarse, split):
    return python2_pickle(
        {
            b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
            b"batch_label": f"{split} batch".encode(),
            b"fine_labels": [int(v) for v in fine],
            b"coarse_labels": [int(v) for v in coarse],
            b"data": _planar(images),
        }
    )


def _add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def cifar_files(kind, splits):
    """{member name: bytes} of a CIFAR-100 archive of `kind` ("binary"/"python")
    holding `splits` = {split: (images, fine, coarse)}."""
    names = [f"fine_{i}" for i in range(100)]
    if kind == "binary":
        files = {
            f"{CIFAR_BINARY}/{split}.bin": cifar_binary_bytes(*arrays)
            for split, arrays in splits.items()
        }
        files[f"{CIFAR_BINARY}/fine_label_names.txt"] = "\n".join(names).encode()
        return files
    files = {
        f"{CIFAR_PYTHON}/{split}": cifar_python_bytes(*arrays, split)
        for split, arrays in splits.items()
    }
    files[f"{CIFAR_PYTHON}/meta"] = python2_pickle(
        {b"fine_label_names": [n.encode() for n in names]}
    )
    return files


def write_cifar_archive(directory, kind, splits, extra=None):
    """Writes `cifar-100-<kind>.tar.gz`; `extra` adds members {name: bytes}."""
    path = os.path.join(directory, f"cifar-100-{kind}.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {**cifar_files(kind, splits), **(extra or {})}.items():
            _add_bytes(tar, name, data)
    return path


def write_cifar_folder(directory, kind, splits):
    """Writes the extracted `cifar-100-<kind>/` folder; returns its path."""
    for name, data in cifar_files(kind, splits).items():
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return os.path.join(directory, CIFAR_BINARY if kind == "binary" else CIFAR_PYTHON)


# Market-1501 ----------------------------------------------------------------

MARKET = "Market-1501-v15.09.15"


def jpeg(seed, size=(128, 64)):
    """A small JPEG whose mean color depends on `seed`."""
    rng = np.random.default_rng(seed)
    image = np.full((*size, 3), rng.integers(30, 220, size=3), dtype=np.uint8)
    image[:, : size[1] // 4] //= 2  # Left quarter darker: a flip shows.
    return tf.io.encode_jpeg(image, quality=95).numpy()


# (person id, camera, frame) per split; the ids and cameras are what tests check.
MARKET_LAYOUT = {
    "bounding_box_train": [
        (2, 1, 1),
        (2, 2, 2),
        (7, 1, 3),
        (7, 2, 4),
        (9, 1, 5),
        (9, 2, 6),
    ],
    "query": [(3, 1, 10), (5, 2, 11), (8, 1, 12)],
    "bounding_box_test": [
        (3, 2, 20),
        (3, 1, 21),  # Same id and camera as a query: removed at ranking time.
        (5, 1, 22),
        (8, 2, 23),
        (0, 1, 24),  # Distractor: kept.
        (-1, 2, 25),  # Junk: dropped by the reader.
    ],
}


def market_name(person_id, camera, frame):
    pid = "-1" if person_id == -1 else f"{person_id:04d}"
    return f"{pid}_c{camera}s1_{frame:06d}_01.jpg"


def write_market_tree(directory, full_layout=False):
    """A fake `Market-1501-v15.09.15/` with the layout above, a Thumbs.db in
    every folder, and (with `full_layout`) the gt_bbox/gt_query folders of the
    real dataset. Returns its path."""
    root = os.path.join(directory, MARKET)
    for folder, entries in MARKET_LAYOUT.items():
        os.makedirs(os.path.join(root, folder))
        for person_id, camera, frame in entries:
            with open(
                os.path.join(root, folder, market_name(person_id, camera, frame)), "wb"
            ) as f:
                f.write(jpeg(frame))
        with open(os.path.join(root, folder, "Thumbs.db"), "wb") as f:
            f.write(b"\x00" * 16)
    if full_layout:
        for folder in ("gt_bbox", "gt_query"):
            os.makedirs(os.path.join(root, folder))
            with open(os.path.join(root, folder, market_name(3, 1, 10)), "wb") as f:
                f.write(jpeg(10))
    return root


def zip_tree(root):
    """Zips a folder the way the published archive is laid out; returns the zip."""
    path = root + ".zip"
    parent = os.path.dirname(root)
    with zipfile.ZipFile(path, "w") as zf:
        for folder, _, files in sorted(os.walk(root)):
            zf.write(folder, os.path.relpath(folder, parent))
            for name in sorted(files):
                full = os.path.join(folder, name)
                zf.write(full, os.path.relpath(full, parent))
    return path


# CIFAR-10 -------------------------------------------------------------------


def write_cifar10_archive(directory, kind, train, test):
    """Writes `cifar-10-<kind>.tar.gz` in the official layout: `train`
    (images, labels) split over data_batch_1..5, `test` in test_batch."""
    folder = "cifar-10-batches-bin" if kind == "binary" else "cifar-10-batches-py"
    batches = {
        f"data_batch_{i + 1}": (images, labels)
        for i, (images, labels) in enumerate(
            zip(np.array_split(train[0], 5), np.array_split(train[1], 5))
        )
    }
    batches["test_batch"] = test
    path = os.path.join(directory, f"cifar-10-{kind}.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for name, (images, labels) in batches.items():
            if kind == "binary":
                records = np.concatenate(
                    [labels[:, None].astype(np.uint8), _planar(images)], axis=1
                )
                _add_bytes(tar, f"{folder}/{name}.bin", records.tobytes())
            else:
                content = {
                    b"batch_label": name.encode(),
                    b"labels": [int(v) for v in labels],
                    b"data": _planar(images),
                }
                _add_bytes(tar, f"{folder}/{name}", python2_pickle(content))
    return path


def idx_arrays(num_examples, seed=0, num_classes=10):
    """Random uint8 28x28 images and labels, every class present."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_examples, 28, 28), dtype=np.uint8)
    labels = (np.arange(num_examples) % num_classes).astype(np.uint8)
    return images, labels


def idx_bytes(array):
    """One IDX file as the originals are written (written here by hand, not
    by the reader's module): magic 0x00000803 (3-d unsigned bytes) or
    0x00000801 (1-d), one big-endian uint32 per dimension, the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = {3: 0x00000803, 1: 0x00000801}[array.ndim]
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx_folder(directory, train, test, gz=True):
    """The four IDX files of MNIST / Fashion-MNIST, in the original format,
    gzipped as distributed or plain."""
    os.makedirs(directory, exist_ok=True)
    for split, (images, labels) in (("train", train), ("test", test)):
        for name, array in zip(IDX_NAMES[split], (images, labels)):
            data = idx_bytes(array)
            if gz:
                name, data = f"{name}.gz", gzip.compress(data)
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
    return str(directory)
