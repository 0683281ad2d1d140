"""Your own images: `train/<class>/*.jpg|png` and `test/<class>/...`, the
layout of `keras.utils.image_dataset_from_directory`, with seeded, resumable
epochs like every other dataset here.

Class names are the sorted folder names of `train/`, mapped to 0..C-1 (as
`image_dataset_from_directory` does); `test/` must have the same classes.
Files are listed in sorted order, in subfolders too (as Keras finds them).
A class folder without images, a file name that is not UTF-8, or a file that
is not a whole JPEG or PNG is an error naming it.
"""

import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_dml.data.image_files import check_jpeg, image_batches
from keras_dml.data.options import PipelineOptions

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


class ImageFolderSplit(NamedTuple):
    """One split: sorted file paths, their labels and the class names."""

    paths: list
    labels: np.ndarray
    class_names: list


def _classes(directory):
    return sorted(
        name
        for name in os.listdir(directory)
        if os.path.isdir(os.path.join(directory, name)) and not name.startswith(".")
    )


def read_image_folders(root, split):
    """Lists `root/<split>/<class>/<image>`.

    Raises:
        FileNotFoundError: `root/<split>` does not exist.
        ValueError: no class folder, a class folder missing from one split, or
            a split (or class) without images; the message names the path.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    root = os.fspath(root)
    directory = os.path.join(root, split)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"{directory} does not exist: --data_dir must hold train/<class>/ and "
            "test/<class>/ folders of images (the layout of "
            "keras.utils.image_dataset_from_directory)."
        )
    classes = _classes(os.path.join(root, "train"))
    if not classes:
        raise ValueError(f"{os.path.join(root, 'train')} holds no class folder.")
    here = _classes(directory)
    missing = sorted(set(classes) - set(here))
    extra = sorted(set(here) - set(classes))
    if missing or extra:
        raise ValueError(
            f"{directory}: the class folders differ from train/'s: "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"not in train/: {extra}" if extra else "")
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(directory, name)
        files = _images_under(folder)
        if not files:
            raise ValueError(
                f"{folder} holds no image (looked for {', '.join(IMAGE_SUFFIXES)}, "
                "in it and its subfolders): every class needs images in both splits."
            )
        paths += files
        labels += [label] * len(files)
    return ImageFolderSplit(paths, np.asarray(labels, np.int64), classes)


def _images_under(folder):
    """The image files in `folder` and its subfolders, as
    `image_dataset_from_directory` finds them (links not followed), sorted;
    a folder whose name ends in .jpg is not an image."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = os.path.join(root, name)
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"{os.fsencode(root).decode('utf-8', 'replace')}: the file name "
                    f"{os.fsencode(name)!r} is not valid UTF-8, which TensorFlow's "
                    "file reading needs; rename it."
                ) from None
            if os.path.isfile(path):
                found.append(path)
    return found


def _check_png(contents, path):
    # As for JPEG (`check_jpeg`), bytes after the end chunk are allowed.
    length = tf.strings.length(contents)
    head = tf.strings.substr(contents, 0, tf.minimum(length, 8))
    has_end = tf.size(tf.strings.split(contents, sep=_PNG_END)) > 1
    complete = tf.logical_and(tf.equal(head, _PNG_SIGNATURE), has_end)
    return tf.debugging.Assert(
        complete,
        [
            tf.strings.join(
                [path, ": not a complete PNG; the file is truncated or corrupt."]
            )
        ],
    )


def decode_file(contents, path, image_size):
    """JPEG or PNG bytes -> float32 `[height, width, 3]` in 0..255, resized;
    an incomplete file fails naming `path`."""
    is_png = tf.strings.regex_full_match(tf.strings.lower(path), r".*\.png")
    check = tf.cond(
        is_png,
        lambda: _assert_done(_check_png(contents, path)),
        lambda: _assert_done(check_jpeg(contents, path)),
    )
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image = tf.image.resize(image, image_size)
    image.set_shape((*image_size, 3))
    return image


def _assert_done(op):
    with tf.control_dependencies([op]):
        return tf.constant(True)


def image_folder_dataset(
    *,
    paths,
    labels,
    image_size,
    batch_size,
    mean,
    std,
    augment=False,
    shuffle=False,
    seed=None,
    drop_remainder=False,
    epochs=None,
    initial_epoch=0,
    input_context=None,
):
    """Batches `(normalized float32 images, int32 labels)` from image files.

    Training order and flips are a function of (seed, epoch) alone, as in
    `keras_dml.data.array_dataset`; see `keras_dml.data.options` for
    `epochs`, `initial_epoch` and `input_context`.
    """
    options = PipelineOptions(
        batch_size,
        mean,
        std,
        augment=augment,
        shuffle=shuffle,
        seed=seed,
        drop_remainder=drop_remainder,
        epochs=epochs,
        initial_epoch=initial_epoch,
        input_context=input_context,
    )
    return image_folder_batches(paths, labels, image_size, options)


def image_folder_batches(paths, labels, image_size, options):
    """`image_folder_dataset` with its options as one `PipelineOptions`."""
    image_size = tuple(int(s) for s in image_size)
    path_table = tf.constant(list(paths))
    label_table = tf.constant(np.asarray(labels, np.int32))

    def load_one(index):
        path = tf.gather(path_table, index)
        return decode_file(tf.io.read_file(path), path, image_size)

    return image_batches(
        count=len(paths),
        load_one=load_one,
        targets=label_table,
        image_size=image_size,
        options=options,
    )
