"""The datasets a run can train on, one module each: its reader, loader,
defaults, smoke-test defaults, checks, data-dir hint and evaluation, and the
registry entry it adds when imported (`keras_dml.datasets.registry` says
what an entry holds).

Adding a dataset is one module here that calls `registry.register(...)`:
every module of this package is imported (and so registered) in name
order, and `scripts/train.py --dataset=<name>` then trains on it, with
every setting as a flag.
"""

import importlib
import pkgutil

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

# Not datasets: the registry itself, and the TFDS builder of Market-1501,
# which imports tensorflow_datasets (slow) and registers with TFDS, not here.
_NOT_DATASETS = ("registry", "market1501_tfds")
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _NOT_DATASETS:
        importlib.import_module(f"{__name__}.{_module}")  # Registers itself.

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
