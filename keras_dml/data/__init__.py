"""Readers and tf.data pipelines: uint8 image arrays (`array_dataset`),
image files and folders, archives, the IDX format, augmentation and
normalization, epochs that resume exactly.

Each dataset's own reader lives with the rest of the dataset in
`keras_dml.datasets` (one module each). The readers this package has always
offered (CIFAR-100, Market-1501, MNIST, Fashion-MNIST) are still importable
from here; the TFDS builder for Market-1501 is
`keras_dml.datasets.market1501_tfds` (import it to register `market1501`).
"""

import importlib

from keras_dml.data.arrays import array_dataset
from keras_dml.data.epochs import steps_per_epoch

# Names that live in keras_dml.datasets, which imports this package: looked up
# when first used (PEP 562), since importing them here would be a cycle.
_FROM_DATASETS = {
    "Market1501Split": "market1501",
    "cifar100_dataset": "cifar100",
    "load_cifar100": "cifar100",
    "read_cifar100": "cifar100",
    "load_fashion_mnist": "fashion_mnist",
    "read_fashion_mnist": "fashion_mnist",
    "market1501_dataset": "market1501",
    "read_market1501": "market1501",
    "load_mnist": "mnist",
    "read_mnist": "mnist",
}


# The dataset modules themselves, as `from keras_dml.data import cifar10` has
# always given them.
_DATASET_MODULES = ("cifar10", "cifar100", "fashion_mnist", "market1501", "mnist")


def __getattr__(name):
    if name in _DATASET_MODULES:
        return importlib.import_module(f"keras_dml.datasets.{name}")
    if name in _FROM_DATASETS:
        module = importlib.import_module(f"keras_dml.datasets.{_FROM_DATASETS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'keras_dml.data' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_FROM_DATASETS, *_DATASET_MODULES])


__all__ = ["array_dataset", "steps_per_epoch", *_FROM_DATASETS]
