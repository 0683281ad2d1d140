"""A `keras.utils.PyDataset` whose batches are checked on the host.

On JAX an error inside a step comes too late: Keras's JAX trainer has taken
the model's state into the jitted step, and an error there leaves the model
unusable (and a label out of range trains to NaN without one). NumPy arrays
are checked before `fit` starts (`MutualLearningModel._check_arrays`); a
`PyDataset` yields NumPy batches in Python, so each is checked as Keras
reads it, before it reaches a step, with the same errors. TensorFlow reads a
`PyDataset` through `tf.data` and checks labels in the graph.
"""

import keras


class CheckedPyDataset(keras.utils.PyDataset):
    """`dataset`, each batch passed to `check(x, y, where)` before it is
    returned (`where` names the batch)."""

    def __init__(self, dataset, check):
        super().__init__(
            workers=dataset.workers,
            use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset
        self._check = check

    def __len__(self):
        return len(self.dataset)

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def __getitem__(self, index):
        batch = self.dataset[index]
        if isinstance(batch, tuple):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
            self._check(x, y, f"batch {index} of {type(self.dataset).__name__}")
        return batch

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()
