"""TensorFlow's threads for a cohort trained on a CPU.

TensorFlow runs independent ops side by side (inter-op threads) and splits
each op over threads (intra-op threads), by default as many as the cores for
both. A cohort's peers are independent until the loss, so with K peers the
cores are already kept busy by K ops at a time, and splitting every small
convolution over all the cores costs more than it gives: on 2 cores, one
thread per op took two ResNet-32 peers' step from 1.07x to 1.18x the speed
of tuned PyTorch in float32, and from 1.10x to 1.27x in bfloat16
(BENCHMARKS.md). Big convolutions (MobileNet at 256x128) gain nothing and
lose nothing.

`configure_cpu_threads(num_peers)` sets cores // K threads per op on a
machine without GPUs. It must run before TensorFlow runs its first op
(building a model runs ops). It is process-wide, so it leaves alone what it
should not change: with no `threads` given, a value the user already set
(`tf.config.threading.set_intra_op_parallelism_threads`) is kept, and once
TensorFlow has run ops nothing changes (it returns None; with `threads`
given, it raises instead). Inter-op threads (how many ops run side by side)
are never touched.
"""

import os

import tensorflow as tf


def threads_per_op(num_peers, cores=None):
    """cores // num_peers, at least 1."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, num_peers))


def configure_cpu_threads(num_peers, threads=None):
    """Sets TensorFlow's intra-op threads for training `num_peers` peers on
    this machine's CPU; returns the number set, or None where nothing is set
    (a GPU is present, `threads` is 0, the user set threads per op already,
    or TensorFlow has run ops).

    Args:
        num_peers: the cohort's size K.
        threads: threads per op; None: `threads_per_op(num_peers)`, unless
            threads per op were set already; 0: TensorFlow's default
            (nothing is set).

    Raises:
        RuntimeError: TensorFlow has already run an op and `threads` was
            given explicitly (it can no longer change).
    """
    if threads == 0 or tf.config.list_physical_devices("GPU"):
        return None
    wanted = threads_per_op(num_peers) if threads is None else threads
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if current == wanted:
        return wanted
    if threads is None and current != 0:  # 0: TensorFlow's own choice.
        return None  # The user chose; automatic threads keep it.
    try:
        tf.config.threading.set_intra_op_parallelism_threads(wanted)
    except RuntimeError:
        if threads is None:  # Automatic: keep what TensorFlow has.
            return None
        raise RuntimeError(
            f"TensorFlow's threads per op can no longer change (it has run "
            f"ops already): call configure_cpu_threads({num_peers}, {threads}) "
            "before building models or running anything."
        ) from None
    return wanted
