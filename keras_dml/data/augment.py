"""Batch augmentations as small tensor -> tensor functions.

The random numbers come in as tensors (drawn per element by `epochs.py`), so
every function here is deterministic: the same inputs give the same batch,
eagerly or inside `Dataset.map`.
"""

import math

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


# Random numbers `random_erase` takes per element.
ERASE_RANDOMS = 5


def random_erase(images, randoms, probability, fill, area=(0.02, 0.4), min_aspect=0.3):
    """Random Erasing (Zhong et al., AAAI 2020): replaces a random rectangle
    of each image by `fill`, with probability `probability`.

    The rectangle covers a fraction of the image drawn uniformly from `area`
    (the paper's s_l, s_h = 0.02, 0.4), with a height/width ratio drawn
    log-uniformly from [min_aspect, 1 / min_aspect] (r_1 = 0.3). The paper
    redraws a rectangle that does not fit; here one draw is clipped to the
    image and placed uniformly among the positions where it fits, so every
    element needs exactly `ERASE_RANDOMS` numbers.

    Args:
        images: float `[B, H, W, C]`.
        randoms: uniform [0, 1) numbers, `[B, ERASE_RANDOMS]`: (apply, area,
            aspect, top, left).
        probability: chance that an image is erased.
        fill: what the rectangle is filled with: a scalar or a `[C]` vector
            (re-ID code fills the mean pixel, which normalizes to 0).
    """
    height, width = images.shape[1], images.shape[2]
    randoms = tf.cast(randoms, tf.float32)
    apply, area_u, aspect_u, top_u, left_u = tf.unstack(randoms, axis=1)
    fraction = area[0] + (area[1] - area[0]) * area_u
    log_bound = -math.log(min_aspect)
    aspect = tf.exp(log_bound * (2.0 * aspect_u - 1.0))
    pixels = fraction * height * width

    def side(length, limit):
        return tf.clip_by_value(tf.cast(tf.round(length), tf.int32), 1, limit)

    erase_h = side(tf.sqrt(pixels * aspect), height)
    erase_w = side(tf.sqrt(pixels / aspect), width)

    def start(u, size, limit):
        # Uniform over the limit - size + 1 positions where the rectangle fits.
        positions = tf.cast(limit - size + 1, tf.float32)
        return tf.minimum(tf.cast(tf.floor(u * positions), tf.int32), limit - size)

    top = start(top_u, erase_h, height)
    left = start(left_u, erase_w, width)
    rows = tf.range(height)[tf.newaxis]
    cols = tf.range(width)[tf.newaxis]
    in_rows = (rows >= top[:, tf.newaxis]) & (rows < (top + erase_h)[:, tf.newaxis])
    in_cols = (cols >= left[:, tf.newaxis]) & (cols < (left + erase_w)[:, tf.newaxis])
    erased = (
        in_rows[:, :, tf.newaxis]
        & in_cols[:, tf.newaxis, :]
        & (apply < probability)[:, tf.newaxis, tf.newaxis]
    )
    fill = tf.cast(tf.convert_to_tensor(fill), images.dtype)
    return tf.where(erased[..., tf.newaxis], fill, images)
