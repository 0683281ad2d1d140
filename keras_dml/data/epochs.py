"""Epochs of index batches whose order and random numbers depend only on
(seed, epoch, element): the backbone of every pipeline in `keras_dml.data`.

Why not `Dataset.shuffle`: its order also depends on TensorFlow's global seed
and on how many times the dataset was iterated in this process, so a run
resumed at epoch e would not see the batches an uninterrupted run saw. Here
epoch e's permutation and each element's augmentation numbers are drawn with
stateless random ops keyed on (seed, e), so they are the same in any process.
"""

import math

import numpy as np
import tensorflow as tf

from keras_dml.checks import check_number

# Independent random streams drawn from one (seed, epoch) key.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1
_NUM_STREAMS = 2


def steps_per_epoch(num_examples, batch_size, drop_remainder=True):
    """Batches in one epoch: what to pass as `fit(steps_per_epoch=...)`."""
    if drop_remainder:
        return num_examples // batch_size
    return math.ceil(num_examples / batch_size)


def resolve_seed(seed, input_context=None):
    """A concrete seed: `seed` itself, or a random one when it is None."""
    if seed is None:
        if input_context is not None and input_context.num_input_pipelines > 1:
            raise ValueError(
                "Multi-worker input pipelines need an explicit `seed`: every worker "
                "must draw the same permutation and keep its own slice of it. "
                "Received: seed=None"
            )
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an integer or None. Received: seed={seed!r}")
    return int(seed)


def _stateless_key(seed, epoch, stream):
    return tf.stack([tf.constant(seed, tf.int64), epoch * _NUM_STREAMS + stream])


def _epoch_keys(seed, random_order, epochs, initial_epoch):
    if epochs is not None:
        if not 0 <= initial_epoch < epochs:
            raise ValueError(
                "Expected 0 <= initial_epoch < epochs. "
                f"Received: initial_epoch={initial_epoch}, epochs={epochs}"
            )
        return tf.data.Dataset.range(initial_epoch, epochs)
    if initial_epoch:
        raise ValueError(
            "`initial_epoch` needs `epochs` (the dataset then holds epochs "
            f"initial_epoch..epochs-1). Received: initial_epoch={initial_epoch}"
        )
    if not random_order:
        return tf.data.Dataset.range(1)
    # One epoch per iteration, with a fresh key each time Keras re-iterates it:
    # a plain `fit(dataset, epochs=...)` reshuffles every epoch.
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)


def _shard(dataset, global_batch_size, input_context):
    """This input pipeline's share of every global batch, as per-replica batches.

    Pipeline p serves replicas p*L .. p*L+L-1 (L = replicas per pipeline), so it
    keeps that contiguous slice of each global batch: the replicas of all
    workers together see exactly the batch a single process would.
    """
    per_replica = input_context.get_per_replica_batch_size(global_batch_size)
    replicas_here = (
        input_context.num_replicas_in_sync // input_context.num_input_pipelines
    )
    size = per_replica * replicas_here
    start = input_context.input_pipeline_id * size
    dataset = dataset.map(
        lambda batch: tf.nest.map_structure(lambda t: t[start : start + size], batch)
    )
    return dataset.rebatch(per_replica)


def index_batches(num_examples, options, num_random=0):
    """Batches of example indices and per-element uniform random numbers.

    Args:
        num_examples: size of the split.
        options: a `keras_dml.data.options.PipelineOptions`: the batch size,
            order, seed, epochs and input context (its normalization and
            augmentation are the caller's).
        num_random: how many uniform [0, 1) numbers each element gets for its
            augmentation (0 for none).

    Returns:
        A dataset of dicts `{"index": int64 [b], "random": float32 [b, num_random]}`.
    """
    batch_size, shuffle = options.batch_size, options.shuffle
    drop_remainder, input_context = options.drop_remainder, options.input_context
    epochs, initial_epoch = options.epochs, options.initial_epoch
    seed = resolve_seed(options.seed, input_context)
    if num_examples < 1:
        raise ValueError(
            f"The split has no examples. Received: num_examples={num_examples}"
        )
    check_number("`batch_size`", batch_size, 1, integer=True)
    if drop_remainder and batch_size > num_examples:
        raise ValueError(
            f"`batch_size` ({batch_size}) is larger than the split ({num_examples} "
            "examples) and partial batches are dropped: every epoch would be empty."
        )

    def one_epoch(key):
        indices = tf.range(num_examples, dtype=tf.int64)
        if shuffle:
            indices = tf.random.experimental.stateless_shuffle(
                indices, seed=_stateless_key(seed, key, _SHUFFLE_STREAM)
            )
        # Element i's numbers depend on (seed, epoch, i), not on its position.
        randoms = tf.random.stateless_uniform(
            [num_examples, num_random], seed=_stateless_key(seed, key, _AUGMENT_STREAM)
        )
        elements = {"index": indices, "random": tf.gather(randoms, indices)}
        return tf.data.Dataset.from_tensor_slices(elements).batch(
            batch_size, drop_remainder=drop_remainder
        )

    random_order = shuffle or num_random > 0
    dataset = _epoch_keys(seed, random_order, epochs, initial_epoch).flat_map(one_epoch)
    num_epochs = 1 if epochs is None else epochs - initial_epoch
    options = tf.data.Options()
    if input_context is not None:
        dataset = _shard(dataset, batch_size, input_context)
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
    else:
        # No files to shard by: multi-worker strategies shard the batches.
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
    # flat_map hides the length; Keras needs it for progress bars and to end a
    # validation pass without an "input ran out of data" warning.
    per_epoch = _batches_per_epoch(
        num_examples, batch_size, drop_remainder, input_context
    )
    dataset = dataset.apply(
        tf.data.experimental.assert_cardinality(num_epochs * per_epoch)
    )
    return dataset.with_options(options)


def _batches_per_epoch(num_examples, batch_size, drop_remainder, input_context):
    """Batches one pipeline yields per epoch (after sharding, per replica)."""
    sizes = [batch_size] * (num_examples // batch_size)
    if num_examples % batch_size and not drop_remainder:
        sizes.append(num_examples % batch_size)
    if input_context is None:
        return len(sizes)
    per_replica = input_context.get_per_replica_batch_size(batch_size)
    replicas_here = (
        input_context.num_replicas_in_sync // input_context.num_input_pipelines
    )
    start = input_context.input_pipeline_id * per_replica * replicas_here
    kept = [min(max(size - start, 0), per_replica * replicas_here) for size in sizes]
    return sum(math.ceil(k / per_replica) for k in kept)
