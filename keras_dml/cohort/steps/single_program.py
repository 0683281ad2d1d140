"""What JAX's and PyTorch's steps share: one program over the whole batch.

Neither backend splits a batch into replicas the way `tf.distribute` does
(JAX's `DataParallel` runs one program over the global batch; PyTorch runs
on one device), so the counts are the batch's own, the regularization is not
divided, variables need no strategy scope and the logs need no reshaping.
"""

import contextlib

from keras import ops

from keras_dml.cohort.labels import labeled_mask


class SingleProgramSteps:
    """Base of `JaxSteps` and `TorchSteps` (see `keras_dml.cohort.steps`)."""

    # Neither JAX's jitted step nor this package's torch step asserts label
    # values: a PyDataset's batches are checked on the host
    # (keras_dml.cohort.checked_batches).
    checks_labels_in_graph = False

    def train_step(self, data):
        return self._train_on(*self._unpack(data))

    def test_step(self, data):
        return self._test_on(*self._unpack(data))

    def _num_replicas(self):
        return 1

    def _counts(self, labels):
        _, mask = labeled_mask(labels)
        local = (ops.sum(mask), ops.cast(ops.shape(mask)[0], "float32"))
        return (*local, *local)

    def _variable_scope(self):
        return contextlib.nullcontext()

    def _finalize_logs(self, logs):
        return logs
