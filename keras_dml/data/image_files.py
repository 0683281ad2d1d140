"""The tail every file-backed image pipeline shares (Market-1501, image
folders): seeded index batches, images decoded one by one, flips and Random
Erasing drawn from (seed, epoch, element), normalization, prefetch."""

import tensorflow as tf

from keras_dml.data import augment as augment_ops
from keras_dml.data.epochs import index_batches
from keras_dml.data.normalization import normalize


def image_batches(
    *,
    count,
    load_one,
    targets,
    image_size,
    options,
    random_erasing=0.0,
    erase_fill=0.0,
    erasing_randoms=False,
):
    """Batches `(normalized float32 images, targets)` of `count` images.

    Args:
        count: how many images the split has.
        load_one: `index -> float32 [height, width, 3]` in 0..255.
        targets: a tensor (or nest of tensors) with one entry per image;
            each batch carries the entries at its indices.
        image_size: `(height, width)` `load_one` returns.
        options: a `keras_dml.data.options.PipelineOptions`; its `augment`
            is random horizontal flips (and Random Erasing, if
            `random_erasing` > 0).
        random_erasing: the probability of erasing a rectangle of an image,
            filled with `erase_fill` (0..255 per channel).
        erasing_randoms: draw the erasing's numbers even when
            `random_erasing` is 0, so that turning it on changes no flip.
    """
    augment, mean, std = options.augment, options.mean, options.std
    erase = augment and random_erasing > 0
    num_random = 0
    if augment:
        num_random = 1 + (augment_ops.ERASE_RANDOMS if erasing_randoms or erase else 0)

    def load(batch):
        index = batch["index"]
        images = tf.map_fn(
            load_one,
            index,
            fn_output_signature=tf.TensorSpec((*image_size, 3), tf.float32),
        )
        if augment:
            images = augment_ops.flip_left_right(images, batch["random"][:, 0] < 0.5)
        if erase:
            images = augment_ops.random_erase(
                images, batch["random"][:, 1:], random_erasing, erase_fill
            )
        picked = tf.nest.map_structure(lambda t: tf.gather(t, index), targets)
        return normalize(images, mean, std), picked

    indices = index_batches(count, options, num_random=num_random)
    dataset = indices.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def check_jpeg(contents, filename):
    """An op that fails, naming the file, unless `contents` starts with the
    JPEG start marker and holds the end marker (catches truncated, empty and
    non-JPEG files, which `decode_jpeg` would report without the file's name,
    or decode gray). Bytes after the end marker are allowed, however many:
    some encoders and cameras pad there, and `decode_jpeg` ignores them."""
    length = tf.strings.length(contents)
    head = tf.strings.substr(contents, 0, tf.minimum(length, 2))
    last_two = tf.strings.substr(
        contents, tf.maximum(length - 2, 0), tf.minimum(length, 2)
    )

    def end_marker_anywhere():
        # Scanned data holds no 0xFFD9 (the encoder stuffs 0x00 after each
        # 0xFF), so the marker is found only where a JPEG ends. A byte split,
        # not a per-byte scan: linear and without a tensor per byte.
        return tf.size(tf.strings.split(contents, sep=b"\xff\xd9")) > 1

    # The usual file ends with the marker: only padded ones are searched.
    has_end = tf.cond(
        tf.equal(last_two, b"\xff\xd9"), lambda: tf.constant(True), end_marker_anywhere
    )
    complete = tf.logical_and(tf.equal(head, b"\xff\xd8"), has_end)
    return tf.debugging.Assert(
        complete,
        [
            tf.strings.join(
                [
                    filename,
                    ": not a complete JPEG (no start or end marker); the file "
                    "is truncated or corrupt.",
                ]
            )
        ],
    )
