"""Deep Mutual Learning for Keras 3: a cohort of peers that learn from each other.

Public names: `MutualLearningModel`, `PeerOptimizers`,
`configure_cpu_threads`, and the modules
`keras_dml.analysis`, `keras_dml.data`, `keras_dml.datasets`,
`keras_dml.export`, `keras_dml.losses`, `keras_dml.mimicry`,
`keras_dml.models` and `keras_dml.reid` (`keras_dml.training` holds the
scripts' runs and is imported on demand). The cohort itself (the model, its
per-backend steps, mimicry, losses, metrics, peer optimizers, label checks,
fit adaptations and progress bar) is the wing `keras_dml.cohort`;
docs/ARCHITECTURE.md draws the whole house.
"""

# First, before anything loads TensorFlow: libraries that crash after it.
from keras_dml import native_libraries

native_libraries.load_before_tensorflow()

import sys  # noqa: E402

from keras_dml import (  # noqa: E402
    analysis,
    data,
    datasets,
    export,
    models,
    reid,
)
from keras_dml.backends import configure_cpu_threads  # noqa: E402
from keras_dml.cohort import (  # noqa: E402
    MutualLearningModel,
    PeerOptimizers,
    losses,
    mimicry,
)

# `keras_dml.mimicry` and `keras_dml.losses` were modules of the package root
# before the cohort had its own wing; `import keras_dml.mimicry` and `from
# keras_dml.losses import ...` keep working.
sys.modules[f"{__name__}.mimicry"] = mimicry
sys.modules[f"{__name__}.losses"] = losses

__version__ = "0.1.0"

__all__ = [
    "MutualLearningModel",
    "PeerOptimizers",
    "analysis",
    "configure_cpu_threads",
    "data",
    "datasets",
    "export",
    "losses",
    "mimicry",
    "models",
    "reid",
    "__version__",
]
