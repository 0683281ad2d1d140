"""Batch augmentations as small tensor -> tensor functions.

The random numbers come in as tensors (drawn per element by `epochs.py`), so
every function here is deterministic: the same inputs give the same batch,
eagerly or inside `Dataset.map`.
"""

import tensorflow as tf


def pad_and_crop(images, offsets, padding):
    """Zero-pads each image by `padding` pixels and crops it back to its size.

    Args:
        images: `[B, H, W, C]`.
        offsets: int `[B, 2]` in `0..2 * padding`: the (row, column) of each
            crop's top-left corner in the padded image.
        padding: pixels added on each side.
    """
    if padding == 0:
        return images
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    offsets = tf.cast(offsets, tf.int32)
    # One gather per axis crops every image of the batch at its own offset.
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis]
    cols = offsets[:, 1:] + tf.range(width)[tf.newaxis]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def flip_left_right(images, flips):
    """Mirrors the images where the boolean `flips` ([B]) is true."""
    return tf.where(
        flips[:, tf.newaxis, tf.newaxis, tf.newaxis], images[:, :, ::-1], images
    )
