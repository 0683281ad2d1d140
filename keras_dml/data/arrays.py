"""tf.data pipelines over in-memory image arrays (CIFAR-100, the quickstart)."""

import numpy as np
import tensorflow as tf

from keras_dml.checks import check_number
from keras_dml.data import augment as augment_ops
from keras_dml.data.epochs import index_batches
from keras_dml.data.normalization import normalize
from keras_dml.data.options import PipelineOptions

# Numbers each element draws: crop row, crop column, flip.
_NUM_RANDOM = 3


def _check_arrays(images, labels):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            "`images` must be uint8 of shape [N, H, W, C]. "
            f"Received: {images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],) or not np.issubdtype(
        labels.dtype, np.integer
    ):
        raise ValueError(
            f"`labels` must be integers of shape [{images.shape[0]}] (one per image). "
            f"Received: {labels.dtype} {labels.shape}"
        )
    return images, labels


def array_dataset(
    images,
    labels,
    *,
    batch_size,
    mean,
    std,
    augment=False,
    shuffle=False,
    seed=None,
    padding=4,
    flip=True,
    drop_remainder=False,
    epochs=None,
    initial_epoch=0,
    input_context=None,
    prefetch=True,
):
    """Batches `(normalized float32 images, int32 labels)` from uint8 arrays.

    Pipeline: (seeded) index batches -> gather -> pad/crop/flip -> normalize ->
    prefetch. Augmentation is done on whole batches (one gather per axis), which
    is what keeps a 2-core CPU ahead of training.

    Args:
        images: uint8 `[N, H, W, C]`.
        labels: integer `[N]`; labels < 0 mark unlabeled examples.
        batch_size: the global batch size (under a strategy, Keras splits it).
        mean, std: per-channel statistics of images scaled to [0, 1].
        augment: random `padding`-pixel pad + crop, and horizontal flip if `flip`.
        shuffle: a new permutation each epoch.
        seed: makes the order and augmentation of every epoch reproducible.
        drop_remainder: drop the last partial batch of each epoch.
        epochs, initial_epoch, input_context: see
            `keras_dml.data.options.PipelineOptions`.
        prefetch: end with `prefetch(AUTOTUNE)`.
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
    return array_batches(
        images, labels, options, padding=padding, flip=flip, prefetch=prefetch
    )


def array_batches(images, labels, options, *, padding=4, flip=True, prefetch=True):
    """`array_dataset` with its options as one `PipelineOptions`."""
    images, labels = _check_arrays(images, labels)
    check_number("`padding`", padding, 0, integer=True)
    augment, mean, std = options.augment, options.mean, options.std
    indices = index_batches(
        len(images), options, num_random=_NUM_RANDOM if augment else 0
    )
    images = tf.constant(images)
    labels = tf.constant(labels.astype(np.int32))

    def load(batch):
        x = tf.gather(images, batch["index"])
        if augment:
            random = batch["random"]
            offsets = tf.cast(random[:, :2] * (2 * padding + 1), tf.int32)
            x = augment_ops.pad_and_crop(x, offsets, padding)
            if flip:
                x = augment_ops.flip_left_right(x, random[:, 2] < 0.5)
        return normalize(x, mean, std), tf.gather(labels, batch["index"])

    # `deterministic=True` keeps batch order fixed even with parallel calls.
    dataset = indices.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE) if prefetch else dataset
