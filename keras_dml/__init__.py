"""Deep Mutual Learning for Keras 3: a cohort of peers that learn from each other.

Public names: `MutualLearningModel`, `PeerOptimizers`, and the modules
`keras_dml.data`, `keras_dml.export`, `keras_dml.losses`, `keras_dml.mimicry`,
`keras_dml.models` and `keras_dml.reid` (`keras_dml.training` holds the
scripts' runs and is imported on demand).
"""

from keras_dml import data, export, losses, mimicry, models, reid
from keras_dml.mutual_learning import MutualLearningModel
from keras_dml.peer_optimizers import PeerOptimizers

__version__ = "0.1.0"

__all__ = [
    "MutualLearningModel",
    "PeerOptimizers",
    "data",
    "export",
    "losses",
    "mimicry",
    "models",
    "reid",
    "__version__",
]
