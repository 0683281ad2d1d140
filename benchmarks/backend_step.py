r"""The K=2 ResNet-32 DML training step on each Keras backend: TensorFlow,
JAX and PyTorch, float32 and bfloat16, the same model code.

python benchmarks/backend_step.py [--rounds=3] [--repeats=5] [--steps=5]

A backend is chosen when Keras is imported, so each backend runs in its own
process; the processes run one after the other, --rounds times in turn
(TensorFlow, JAX, PyTorch, TensorFlow, ...), so a slow spell of this shared
machine hits each. Within a process, float32 and `mixed_bfloat16` cohorts
are timed in turn, --repeats times each, --steps synchronized steps (the loss
read back) per timing. Reported: per backend and precision, the median over
every timing of every round, and each backend's time relative to
TensorFlow's.

TensorFlow gets one thread per op as scripts/train.py sets it
(`keras_dml.cpu_threads`); JAX (XLA) and PyTorch use their own thread pools
over every core.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 3, "Processes per backend, run in turn.")
flags.DEFINE_integer("repeats", 5, "Timings per precision in each process.")
flags.DEFINE_integer("steps", 5, "Training steps per timing.")
flags.DEFINE_string("worker", None, "Internal: time this backend and print JSON.")
flags.DEFINE_bool(
    "smoke",
    False,
    "Tiny settings (ResNet-8, batch 8, one round, one step): checks that the "
    "script runs, as the test suite does; the numbers mean nothing.",
)

BACKENDS = ("tensorflow", "jax", "torch")
PRECISIONS = ("float32", "mixed_bfloat16")


def _sizes():
    return {"depth": 8, "batch": 8} if FLAGS.smoke else {"depth": 32, "batch": 64}


def time_backend():
    """In a worker process: median seconds per step for each precision."""
    import keras
    import numpy as np

    import keras_dml
    from keras_dml.cpu_threads import configure_cpu_threads

    if keras.backend.backend() == "tensorflow":
        configure_cpu_threads(2)
    sizes = _sizes()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(sizes["batch"], 32, 32, 3)).astype("float32")
    y = rng.integers(0, 100, size=sizes["batch"]).astype("int32")

    def stepper(policy):
        keras.mixed_precision.set_global_policy(policy)
        try:
            peers = [
                keras_dml.models.ResNetCIFAR(sizes["depth"], num_classes=100)
                for _ in range(2)
            ]
            model = keras_dml.MutualLearningModel(peers)
            model.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
        finally:
            keras.mixed_precision.set_global_policy("float32")

        def step():
            return float(model.train_on_batch(x, y, return_dict=True)["loss"])

        step()  # Build, compile and warm up before timing.
        step()
        return step

    steppers = {policy: stepper(policy) for policy in PRECISIONS}
    times = {policy: [] for policy in PRECISIONS}
    for _ in range(FLAGS.repeats):
        for policy, step in steppers.items():
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                step()
            times[policy].append((time.perf_counter() - start) / FLAGS.steps)
    return times


def _run_worker(backend):
    flags_ = [f"--repeats={FLAGS.repeats}", f"--steps={FLAGS.steps}"]
    if FLAGS.smoke:
        flags_.append("--smoke")
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f"--worker={backend}", *flags_],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"{backend} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv):
    del argv  # Unused.
    if FLAGS.smoke:
        FLAGS.rounds, FLAGS.repeats, FLAGS.steps = 1, 1, 1
    if FLAGS.worker:
        print(json.dumps(time_backend()))
        return
    times = {(b, p): [] for b in BACKENDS for p in PRECISIONS}
    for _ in range(FLAGS.rounds):
        for backend in BACKENDS:
            for policy, seconds in _run_worker(backend).items():
                times[(backend, policy)] += seconds
    median = {key: statistics.median(t) for key, t in times.items()}

    import jax
    from timing import machine

    sizes = _sizes()
    print(f"\nMachine: {machine()}, JAX {jax.__version__}")
    print(
        f"K=2 ResNet-{sizes['depth']} DML step, batch {sizes['batch']}, 32x32x3, "
        f"SGD + Nesterov; median of {FLAGS.rounds} x {FLAGS.repeats} timings of "
        f"{FLAGS.steps} steps.\n"
    )
    print("| backend | float32 (s / step) | mixed_bfloat16 (s / step) |")
    print("| --- | ---: | ---: |")
    for backend in BACKENDS:
        cells = " | ".join(f"{median[(backend, p)]:.3f}" for p in PRECISIONS)
        print(f"| {backend} | {cells} |")
    for backend, label in (("jax", "JAX"), ("torch", "PyTorch")):
        ratios = " | ".join(
            f"{median[(backend, p)] / median[('tensorflow', p)]:.2f}x"
            for p in PRECISIONS
        )
        print(f"| {label} time / TensorFlow time | {ratios} |")


if __name__ == "__main__":
    app.run(main)
