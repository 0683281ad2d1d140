"""Running experiments: strategies, complete CIFAR-100 runs, reports."""

from keras_dml.training.cifar import CifarRun, run_cifar
from keras_dml.training.loop import TrainingDiverged
from keras_dml.training.strategies import make_strategy

__all__ = ["CifarRun", "TrainingDiverged", "make_strategy", "run_cifar"]
