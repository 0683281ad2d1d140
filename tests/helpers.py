"""Tiny peers and data shared by the tests."""

import contextlib
import os
import shutil
import subprocess

import keras
import numpy as np

NUM_FEATURES, NUM_CLASSES = 6, 4


def dense_peer(seed, *, batchnorm=False, hidden=8, num_classes=NUM_CLASSES, name=None):
    """A small MLP peer; `seed` fixes its initial weights."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((NUM_FEATURES,))
    x = keras.layers.Dense(hidden, activation="tanh", kernel_initializer=init)(inputs)
    if batchnorm:
        x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1)
    )(x)
    return keras.Model(inputs, outputs, name=name or f"peer_{seed}")


def dense_branches(num_branches=3, seed=0, *, batchnorm=False, width=5, hidden=0):
    """A branch cohort of small MLPs: `(trunk, branches)`, the trunk a tanh
    layer (and BatchNorm) shared by dense classifier branches (each with a
    tanh layer of `hidden` units of its own first, when > 0)."""
    init = keras.initializers.GlorotUniform
    inputs = keras.Input((NUM_FEATURES,))
    x = keras.layers.Dense(width, activation="tanh", kernel_initializer=init(seed))(
        inputs
    )
    if batchnorm:
        x = keras.layers.BatchNormalization()(x)
    trunk = keras.Model(inputs, x, name=f"trunk_{seed}")
    branches = []
    for i in range(num_branches):
        features = keras.Input((width,))
        h = features
        if hidden:
            h = keras.layers.Dense(
                hidden, activation="tanh", kernel_initializer=init(seed + 50 + i)
            )(h)
        logits = keras.layers.Dense(
            NUM_CLASSES, kernel_initializer=init(seed + 1 + i), bias_initializer="zeros"
        )(h)
        branches.append(keras.Model(features, logits, name=f"branch{i}"))
    return trunk, branches


def image_peer(seed, size=8):
    """A small convolutional peer (with BatchNorm) on size x size RGB images."""
    init = keras.initializers.GlorotUniform
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, kernel_initializer=init(seed))(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(NUM_CLASSES, kernel_initializer=init(seed + 1))(x)
    return keras.Model(inputs, logits, name=f"image_peer_{seed}")


def data(num_examples=32, seed=0, unlabeled=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, NUM_FEATURES)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=num_examples).astype("int32")
    if unlabeled:
        y[rng.choice(num_examples, size=unlabeled, replace=False)] = -1
    return x, y


def batches(x, y, batch_size):
    return [
        (x[i : i + batch_size], y[i : i + batch_size])
        for i in range(0, len(x), batch_size)
    ]


def assert_weights_close(a, b, rtol=1e-5, atol=1e-6):
    a, b = list(a), list(b)
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


@contextlib.contextmanager
def small_filesystem(path, size="8m", read_only=False):
    """A tmpfs of `size` mounted at `path` (a full disk at will, or a
    read-only one); yields False where mounting is not permitted."""
    os.makedirs(path, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = (
        shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path, size):
    """Grows (or shrinks) a tmpfs mounted by `small_filesystem`."""
    subprocess.run(
        ["mount", "-o", f"remount,size={size}", str(path)],
        check=True,
        capture_output=True,
    )
