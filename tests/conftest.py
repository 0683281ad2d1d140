"""Test setup: two logical CPU devices (for MirroredStrategy tests), quiet logs,
a fixed seed and the default dtype policy for every test, and one JAX
compilation cache for every test process."""

import gc
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Many JAX test processes (runs, resumed runs, the core files' cohorts of the
# same shapes) compile the same programs; JAX keys its on-disk cache by the
# program, so each is compiled once per machine. Inherited by subprocesses.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"keras_dml_tests_jax_cache_{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# keras_dml before Keras and TensorFlow: it loads the libraries that crash
# when loaded after TensorFlow (PyTorch's triton; keras_dml.native_libraries).
import keras_dml  # noqa: E402, F401, I001

# isort: split
import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Must run before TensorFlow initialises its devices, hence at import time.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

# Every test ends with `keras.backend.clear_session()`, which runs a full
# `gc.collect()`: with TensorFlow, JAX and PyTorch imported that walks millions
# of objects, 0.3-0.5 s per test (a quarter of the suite's time). What exists
# now lives as long as the process; frozen, the collector skips it.
gc.collect()
gc.freeze()


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.utils.set_random_seed(1234)
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")
    # Without its `gc.collect()`: even with the imports frozen, a full
    # collection after every test cost 0.46 s on average (282 s of worker
    # time in a 2026-12-03 run). A test's cyclic garbage (layers and their
    # models) waits for Python's automatic collections instead.
    keras.backend.clear_session(free_memory=False)


def pytest_collection_modifyitems(config, items):
    # The core test files also run under KERAS_BACKEND=jax and torch
    # (tests/test_backends.py); what only TensorFlow has is marked.
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow only; this run uses {backend}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)
