"""How a cohort's training step takes and applies gradients, per Keras backend.

`MutualLearningModel` is written once: its forward pass, losses, mimicry,
metrics and logs are Keras ops. What differs between backends is only how
gradients are taken and applied and how replicas are counted, as Keras's own
trainers are split: `tensorflow.TensorFlowSteps` (a `tf.GradientTape`,
`tf.distribute` replicas), `jax.JaxSteps` (`jax.value_and_grad` over the
cohort's state, which Keras passes in and takes back) and `torch.TorchSteps`
(`torch.autograd.grad`, eager, one device); the last two share
`single_program.SingleProgramSteps` (no replicas to count). `CohortSteps` is the
one for the backend Keras runs on.

What a backend's class provides (the model calls nothing else of it):

- `train_step` / `test_step` with the signatures its Keras trainer calls;
- `_simultaneous_step(x, y)` / `_sequential_step(x, y)`: the peers' updates,
  returning `(labels, logits, logged terms)`;
- `_checked(y, logits)`: the labels as flat int32 ids, checked;
- `_counts(labels)`: local and global numbers of labeled examples and of
  examples; `_num_replicas()`;
- `_variable_scope()`: where the cohort's optimizer and metric variables are
  created; `_finalize_logs(logs)`;
- `checks_labels_in_graph`: True when the step asserts label values itself
  (otherwise `fit` checks a `keras.utils.PyDataset`'s batches on the host).
"""

import importlib

import keras

# A backend is its step file here, `<name>.py` defining `STEPS`, and its
# runtime, `keras_dml/backends/<name>.py`; its name is listed once, here.
SUPPORTED_BACKENDS = ("tensorflow", "jax", "torch")


def steps_class(backend=None):
    """The step class of `backend` (default: the one Keras runs on)."""
    backend = backend or keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        return _UnsupportedBackend
    # By name, when first asked: each step file imports its backend's
    # library (tensorflow, jax, torch), which only that backend's users have
    # loaded or installed.
    return importlib.import_module(f"keras_dml.cohort.steps.{backend}").STEPS


class _UnsupportedBackend:
    """Stands in on a backend without a cohort step; the model's constructor
    refuses it by name before anything could run."""


CohortSteps = steps_class()
