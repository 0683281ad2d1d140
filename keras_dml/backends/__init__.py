"""What each Keras backend needs from a run besides the cohort's step.

A backend is two files named after it: its cohort step
(`keras_dml/cohort/steps/<name>.py`: how gradients are taken and applied)
and its runtime here (`keras_dml/backends/<name>.py`): the devices each
`--strategy` trains on, deterministic kernels, CPU threads, how a trained
peer runs inference, whether SavedModels are written in this process, and
the versions a run reports. `runtime()` is the one for the backend Keras
runs on; nothing else in keras_dml asks which backend that is.
"""

import importlib

import keras

from keras_dml.backends.base import STRATEGIES, Devices, Runtime
from keras_dml.cohort.steps import SUPPORTED_BACKENDS

__all__ = [
    "STRATEGIES",
    "Devices",
    "Runtime",
    "configure_cpu_threads",
    "has_gpu",
    "make_devices",
    "runtime",
]


def runtime(backend=None):
    """The `Runtime` of `backend` (default: the one Keras runs on)."""
    backend = backend or keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            f"keras_dml runs on Keras's {', '.join(SUPPORTED_BACKENDS)} backends; "
            f"this process uses {backend!r} (KERAS_BACKEND)."
        )
    # By name, when first asked: each runtime file reads its own library
    # (tensorflow, jax, torch), which only that backend's users run.
    return importlib.import_module(f"keras_dml.backends.{backend}").RUNTIME


def make_devices(strategy="auto"):
    """The `Devices` for `--strategy=strategy` on this process's backend.

    Create them at program start, before the backend runs anything: both
    TensorFlow's multi-worker runtime and JAX's processes must start first.
    """
    return runtime().make_devices(strategy)


def has_gpu():
    """True when this process's backend sees a GPU."""
    return runtime().has_gpu()


def configure_cpu_threads(num_peers, threads=None):
    """Threads per op for training `num_peers` peers on this machine's CPU,
    on the backend Keras runs on; call it first, before building the peers.

    On TensorFlow without GPUs: cores // `num_peers` threads per op
    (`keras_dml.cpu_threads`), so that the peers' independent ops run side
    by side; it keeps threads you set yourself and changes nothing once
    TensorFlow has run ops. JAX and PyTorch choose their own (nothing is
    set). Returns the number set, or None.

    Example:

    ```python
    import keras_dml

    keras_dml.configure_cpu_threads(num_peers=2)  # Before any model is built.
    ```
    """
    backend = runtime()
    problem = backend.cpu_threads_problem(threads)
    if problem:
        raise ValueError(problem.replace("--cpu_threads", "`threads`", 1))
    return backend.set_cpu_threads(num_peers, threads)
