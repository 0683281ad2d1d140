"""Deep Mutual Learning for Keras 3: a cohort of peers that learn from each other.

Public names: `MutualLearningModel`, `PeerOptimizers`, and the modules
`keras_dml.data`, `keras_dml.losses` and `keras_dml.models`.
"""

from keras_dml import data, losses, models
from keras_dml.mutual_learning import MutualLearningModel
from keras_dml.peer_optimizers import PeerOptimizers

__version__ = "0.1.0"

__all__ = [
    "MutualLearningModel",
    "PeerOptimizers",
    "data",
    "losses",
    "models",
    "__version__",
]
