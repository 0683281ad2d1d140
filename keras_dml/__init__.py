"""Deep Mutual Learning for Keras 3: a cohort of peers that learn from each other.

Public names: `MutualLearningModel`, `PeerOptimizers`, and the modules
`keras_dml.analysis`, `keras_dml.data`, `keras_dml.export`,
`keras_dml.losses`, `keras_dml.mimicry`, `keras_dml.models` and
`keras_dml.reid` (`keras_dml.training` holds the scripts' runs and is
imported on demand).
"""

# First, before anything loads TensorFlow: libraries that crash after it.
from keras_dml import native_libraries

native_libraries.load_before_tensorflow()

from keras_dml import (  # noqa: E402
    analysis,
    data,
    export,
    losses,
    mimicry,
    models,
    reid,
)
from keras_dml.mutual_learning import MutualLearningModel  # noqa: E402
from keras_dml.peer_optimizers import PeerOptimizers  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "MutualLearningModel",
    "PeerOptimizers",
    "analysis",
    "data",
    "export",
    "losses",
    "mimicry",
    "models",
    "reid",
    "__version__",
]
