"""Readers and tf.data pipelines for CIFAR-100, Market-1501, MNIST and
Fashion-MNIST.

Readers turn the original files into numpy arrays / file lists; pipelines
batch, augment and normalize them (`array_dataset` for any uint8 images).
The TFDS builder for Market-1501 lives in `keras_dml.data.market1501_tfds`
(import it to register `market1501`).
"""

from keras_dml.data.arrays import array_dataset
from keras_dml.data.cifar100 import cifar100_dataset, load_cifar100, read_cifar100
from keras_dml.data.epochs import steps_per_epoch
from keras_dml.data.fashion_mnist import load_fashion_mnist, read_fashion_mnist
from keras_dml.data.market1501 import (
    Market1501Split,
    market1501_dataset,
    read_market1501,
)
from keras_dml.data.mnist import load_mnist, read_mnist

__all__ = [
    "Market1501Split",
    "array_dataset",
    "cifar100_dataset",
    "load_cifar100",
    "load_fashion_mnist",
    "load_mnist",
    "market1501_dataset",
    "read_cifar100",
    "read_fashion_mnist",
    "read_market1501",
    "read_mnist",
    "steps_per_epoch",
]
