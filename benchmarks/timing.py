"""Shared helpers for the benchmarks: machine description and repeated timing.

Benchmarks are measured, never asserted. This machine is shared and noisy, so
every figure is the median of several runs and every ratio is taken between
measurements made in the same run.
"""

import os
import platform
import statistics
import time


def machine():
    """One line: CPU model, cores, Python, TensorFlow and Keras versions."""
    import keras
    import tensorflow as tf

    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )


def median_rate(run, items, repeats):
    """Median items/second of `run()` over `repeats` calls (each processing
    `items` items), and all the rates, highest first."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates), sorted(rates, reverse=True)


def fit_step_times():
    """A Keras callback whose `seconds` lists each training step of `fit`,
    from its batch's start to its loss read back (which synchronizes on
    the step). Keras is imported here, after the caller chose its backend."""
    import keras

    class FitStepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # Synchronize on the step's loss.
            self.seconds.append(time.perf_counter() - self._start)

    return FitStepTimes()


def warm_timer(step, count):
    """Calls `step()` twice (build, compile, warm up), then returns `run()`:
    the mean seconds of `count` further calls (each `step` synchronizes,
    e.g. by reading its loss back)."""
    step()
    step()

    def run():
        start = time.perf_counter()
        for _ in range(count):
            step()
        return (time.perf_counter() - start) / count

    return run
