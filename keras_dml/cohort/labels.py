"""Checking a batch's labels inside the compiled step, and turning a failed
check into a `ValueError` that says what was received and what is expected.

Without the check, a label >= num_classes surfaced as "segment_ids[6] = 210 is
out of range", one-hot labels as "Cannot broadcast shape", and a label of 1.5
trained silently as class 1.
"""

import contextlib
import re

import keras
import tensorflow as tf
from keras import ops

# The check runs in the graph, where only an InvalidArgumentError can stop a
# step; its message carries this text and the offending value, and
# `label_errors()` re-raises it as a ValueError from fit/evaluate.
_PREFIX = "labels must be integer class ids in [0, {num_classes}) or -1 for unlabeled"
_GRAPH_ERROR = re.compile(r"assertion failed: \[(labels must be .*)\]$", re.MULTILINE)


def labeled_mask(labels):
    """Flat int32 labels with unlabeled (< 0) replaced by 0, and a float mask."""
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    labeled = ops.greater_equal(labels, 0)
    return ops.where(labeled, labels, 0), ops.cast(labeled, "float32")


def expected(num_classes):
    """What labels must be, as error messages say it."""
    return _PREFIX.format(num_classes=num_classes)


def checked_labels(labels, num_classes, batch_size=None):
    """`labels` as flat int32 class ids, after checking them.

    Accepted: integer (or whole-number float) class ids of shape [batch] or
    [batch, 1] (Keras's sparse-label shapes), each in [0, num_classes) or
    negative for an unlabeled example.

    Raises:
        ValueError: at trace time, for labels of another rank or shape (e.g.
            one-hot) or a non-numeric dtype.
        tf.errors.InvalidArgumentError: when the step runs, for a label >=
            num_classes or one that is not a whole number; its message holds
            `expected(num_classes)` and the first such label ("received 150").
    """
    labels = tf.convert_to_tensor(labels)
    shape = labels.shape
    # Unknown rank (Keras retraced the step for several label shapes) passes
    # here; the one-label-per-example check below catches one-hot labels at
    # run time.
    known = tuple(shape) if shape.rank is not None else (None,)
    check_form(known, labels.dtype.name, num_classes)
    if shape.rank != 1:
        labels = tf.reshape(labels, [-1])
    if labels.dtype.is_floating:
        whole = tf.logical_and(
            tf.math.is_finite(labels), tf.equal(labels, tf.math.round(labels))
        )
    else:
        whole = tf.ones_like(labels, dtype=tf.bool)
    good = tf.logical_and(whole, tf.less(labels, tf.cast(num_classes, labels.dtype)))
    first_bad = tf.gather(labels, tf.argmin(tf.cast(good, tf.int32)))
    checks = [
        tf.debugging.Assert(
            tf.reduce_all(good),
            [f"{expected(num_classes)}; received", first_bad],
            summarize=1,
        )
    ]
    if batch_size is not None:
        checks.append(
            tf.debugging.Assert(
                tf.equal(tf.size(labels), tf.cast(batch_size, tf.int32)),
                [
                    f"{expected(num_classes)}, one per example; the batch has",
                    batch_size,
                    "examples and",
                    tf.size(labels),
                    "labels",
                ],
            )
        )
    # Everything that reads the labels waits for the checks.
    with tf.control_dependencies(checks):
        return tf.identity(tf.cast(labels, tf.int32))


def flat_labels(labels, num_classes):
    """`labels` as flat int32 class ids, with the checks that need no values.

    The backend-neutral part of `checked_labels`: the rank, shape and dtype
    are checked when the step is traced (a `ValueError`); the values (in
    range, whole numbers) are not, for backends without in-graph assertions.
    """
    shape = tuple(labels.shape)
    check_form(shape, keras.backend.standardize_dtype(labels.dtype), num_classes)
    if len(shape) == 2:
        labels = ops.reshape(labels, (-1,))
    return ops.cast(labels, "int32")


def check_form(shape, dtype, num_classes):
    """Raises the `ValueError` for labels whose dtype (a name: "string" and
    "bool" are refused) or shape (`[batch]` or `[batch, 1]` accepted) cannot
    be class ids; the shape's rank must be known."""
    if dtype in ("string", "bool"):
        raise ValueError(f"{expected(num_classes)}; received {dtype} labels.")
    if not (len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1)):
        hint = ""
        if len(shape) == 2 and shape[-1] == num_classes:
            hint = " (one-hot? pass the class ids: argmax over the last axis)"
        raise ValueError(
            f"{expected(num_classes)}, one per example (shape [batch]); received "
            f"labels of shape {list(shape)}{hint}."
        )


def check_host_labels(values, num_classes):
    """The checks of `checked_labels` (dtype, shape, values) on a NumPy array,
    raising the same `ValueError`s before any step runs."""
    import numpy as np

    values = np.asarray(values)
    kind = {"b": "bool", "U": "string", "S": "string", "O": "string"}
    check_form(values.shape, kind.get(values.dtype.kind), num_classes)
    check_label_values(values, num_classes)


def check_label_values(values, num_classes):
    """Raises the `ValueError` of an in-graph check (`checked_labels`) for
    label values given as a NumPy array: a value >= num_classes or not a whole
    number is named. For backends whose steps run eagerly."""
    import numpy as np

    values = np.asarray(values).reshape(-1)
    if values.dtype.kind in "fc":
        whole = np.isfinite(values) & (values == np.round(values))
    else:
        whole = np.ones(values.shape, bool)
    good = whole & (values < num_classes)
    if not good.all():
        first = values[np.argmin(good)]
        first = int(first) if float(first).is_integer() else float(first)
        raise ValueError(f"{expected(num_classes)}; received {first}")


@contextlib.contextmanager
def label_errors():
    """Re-raises a failed in-graph label check as a `ValueError` whose message
    starts with what labels must be and ends with the value received."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        match = _GRAPH_ERROR.search(str(error.message))
        if match is None:
            raise
        # TF prints the Assert's data as "[part] [part] ...".
        message = " ".join(part.strip() for part in match.group(1).split("] ["))
        raise ValueError(message) from None
