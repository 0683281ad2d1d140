"""The datasets a run can train on, one module each: its reader, loader,
defaults, smoke-test defaults, checks, data-dir hint and evaluation, and the
registry entry it adds when imported (`keras_dml.datasets.registry` says
what an entry holds).

Adding a dataset is one module here that calls `registry.register(...)` and
its name in the import below; `scripts/train.py --dataset=<name>` then
trains on it, with every setting as a flag.
"""

from keras_dml.datasets import (  # noqa: F401  (each registers itself)
    cifar10,
    cifar100,
    digits,
    fashion_mnist,
    folder,
    market1501,
    mnist,
)
from keras_dml.datasets.registry import (
    REGISTRY,
    Dataset,
    LoadedData,
    data_dir_problem,
    get,
    names,
    settings,
    settings_problems,
)

NAMES = names()

__all__ = [
    "NAMES",
    "REGISTRY",
    "Dataset",
    "LoadedData",
    "data_dir_problem",
    "get",
    "names",
    "settings",
    "settings_problems",
]
