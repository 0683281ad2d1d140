"""keras_dml.configure_cpu_threads from the user's own code: it sets
TensorFlow's threads per op only where that is safe (a fresh process, no
GPU, threads the user did not set), in a fresh process each, since
TensorFlow fixes its threads at its first op."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.tensorflow_only

SCRIPT = r"""
import os
import keras, keras_dml, tensorflow as tf

cores = os.cpu_count()
threads = tf.config.threading
# A fresh process: cores // K per op (1 on 2 cores for 2 peers).
assert keras_dml.configure_cpu_threads(2) == max(1, cores // 2)
assert threads.get_intra_op_parallelism_threads() == max(1, cores // 2)
# Threads the user set are kept by the automatic choice...
threads.set_intra_op_parallelism_threads(3)
assert keras_dml.configure_cpu_threads(2) is None
assert threads.get_intra_op_parallelism_threads() == 3
# ... and changed only when asked for by number.
assert keras_dml.configure_cpu_threads(2, threads=2) == 2
keras.ops.add(1.0, 2.0)  # TensorFlow has run an op: its threads are fixed.
assert keras_dml.configure_cpu_threads(4) is None
assert threads.get_intra_op_parallelism_threads() == 2
try:
    keras_dml.configure_cpu_threads(4, threads=1)
except RuntimeError as error:
    assert "can no longer change" in str(error), error
else:
    raise AssertionError("an explicit number after the first op must raise")
print("ok")
"""


def test_threads_per_op_are_set_only_where_safe():
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
