"""Loads the native libraries that crash when they come after TensorFlow's.

Triton (3.8.0 with TensorFlow 2.21; PyTorch 2.14.1 from the package index
installs it) dies with a segmentation fault while its `libtriton.so` loads if
TensorFlow's libraries are already in the process; in the other order both
work. PyTorch loads triton from `torch._dynamo`, which Keras's torch backend
imports, so `KERAS_BACKEND=torch python -c "import keras_dml, keras"` crashed,
and so does any process that imports TensorFlow and then compiles with
PyTorch. Loading libtriton first costs about 0.13 s, only where triton is
installed.

This module imports nothing heavy: `keras_dml/__init__.py` calls
`load_before_tensorflow()` before anything imports TensorFlow or Keras.
A process that imports TensorFlow itself before keras_dml under
`KERAS_BACKEND=torch` still crashes, inside TensorFlow's own import (it
imports Keras, which imports PyTorch's compiler): README says to import
keras_dml or keras first.
"""

import importlib.util
import sys


def _installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def load_before_tensorflow():
    """Loads triton's native library now if it is installed and TensorFlow
    is not loaded yet (later it would crash the process)."""
    if "triton" in sys.modules or "tensorflow" in sys.modules:
        return
    if not _installed("triton"):
        return
    try:
        import triton._C.libtriton  # noqa: F401
    except ImportError:
        pass  # A broken triton: PyTorch runs without it, as it would anyway.
