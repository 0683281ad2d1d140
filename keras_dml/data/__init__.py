"""Readers and tf.data pipelines for CIFAR-100 and Market-1501.

Readers turn the original files into numpy arrays / file lists; pipelines
batch, augment and normalize them. The TFDS builder for Market-1501 lives in
`keras_dml.data.market1501_tfds` (import it to register `market1501`).
"""

from keras_dml.data.arrays import array_dataset
from keras_dml.data.cifar100 import cifar100_dataset, load_cifar100, read_cifar100
from keras_dml.data.epochs import steps_per_epoch
from keras_dml.data.market1501 import (
    Market1501Split,
    market1501_dataset,
    read_market1501,
)

__all__ = [
    "Market1501Split",
    "array_dataset",
    "cifar100_dataset",
    "load_cifar100",
    "market1501_dataset",
    "read_cifar100",
    "read_market1501",
    "steps_per_epoch",
]
