"""Running experiments: settings, the one runner, devices, reports."""

from keras_dml.backends import make_devices
from keras_dml.backends.tensorflow import make_strategy
from keras_dml.training.config import SETTINGS, RunConfig, resolve
from keras_dml.training.loop import TrainingDiverged
from keras_dml.training.run import run

__all__ = [
    "SETTINGS",
    "RunConfig",
    "TrainingDiverged",
    "make_devices",
    "make_strategy",
    "resolve",
    "run",
]
