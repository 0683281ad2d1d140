r"""What DML costs beyond its peers: overhead, efficiency, update order,
bfloat16 and memory.

python benchmarks/dml_step.py [--repeats=5] [--steps=5]

1. DML overhead: one MutualLearningModel step of K = 2, 3, 4 ResNet-32 peers
   vs one step of each of the K peers trained alone (plain Keras models, same
   optimizer), interleaved, batch 64, 32x32x3. Target <= 1.03x.
2. MFU: the DML step's model FLOPs per second (3 x forward) over the float32
   matrix-multiply rate measured in the same run.
3. update="sequential" vs "simultaneous" for K = 2, 3.
4. mixed_bfloat16 vs float32 step time (K = 2), and the quickstart's test
   accuracy under both (--quickstart_seeds seeds).
5. Peak resident memory of training K = 1, 2, 4 peers (one process each).
6. The in-step label check (`keras_dml.cohort.labels`) vs the same step without it
   (K = 2).
Ratios are taken within each repeat; medians are printed as markdown.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from flops import forward_flops, training_flops  # noqa: E402
from timing import machine  # noqa: E402

import keras_dml  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Interleaved repeats (medians reported).")
flags.DEFINE_integer("steps", 5, "Training steps per timing.")
flags.DEFINE_integer(
    "quickstart_seeds", 2, "Seeds of the bf16 accuracy check (0 skips)."
)
flags.DEFINE_integer(
    "memory_steps", 0, "Internal: measure memory of this many steps and exit."
)
flags.DEFINE_integer("memory_peers", 0, "Internal: peers for --memory_steps.")
flags.DEFINE_bool(
    "smoke",
    False,
    "Tiny settings (ResNet-8, batch 8, one repeat, K = 2): checks that the "
    "script runs, as the test suite does; the numbers mean nothing.",
)
flags.DEFINE_list(
    "parts",
    ["overhead", "sequential", "bf16", "memory", "labels"],
    "Which measurements to run.",
)

BATCH = 64
PEER = keras_dml.models.resnet32
COHORT_SIZES = {"overhead": (2, 3, 4), "sequential": (2, 3), "memory": (1, 2, 4)}


def _smoke_settings():
    global BATCH, PEER
    BATCH, PEER = 8, keras_dml.models.resnet8
    COHORT_SIZES.update(overhead=(2,), sequential=(2,), memory=(2,))
    FLAGS.repeats, FLAGS.steps, FLAGS.quickstart_seeds = 1, 1, 0


def _batch():
    x = tf.random.uniform((BATCH, 32, 32, 3))
    y = tf.random.uniform((BATCH,), maxval=100, dtype=tf.int32)
    return x, y


def _optimizer():
    return keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)


def cohort(k, update="simultaneous"):
    peers = [PEER(num_classes=100) for _ in range(k)]
    model = keras_dml.MutualLearningModel(peers, update=update)
    model.compile(_optimizer())
    return model


def alone(k):
    models = []
    for _ in range(k):
        model = PEER(num_classes=100)
        model.compile(
            _optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        models.append(model)
    return models


def _stepper(models, x, y):
    for model in models:
        model.train_on_batch(x, y)  # Build and trace before timing.

    def run():
        start = time.perf_counter()
        for _ in range(FLAGS.steps):
            for model in models:
                model.train_on_batch(x, y)
        return (time.perf_counter() - start) / FLAGS.steps

    return run


def interleaved(a, b):
    """Median seconds per step of a and b, and the median of a/b per repeat."""
    times_a, times_b, ratios = [], [], []
    for _ in range(FLAGS.repeats):
        ta, tb = a(), b()
        times_a.append(ta)
        times_b.append(tb)
        ratios.append(ta / tb)
    return (
        statistics.median(times_a),
        statistics.median(times_b),
        statistics.median(ratios),
    )


def matmul_rate():
    """Sustained float32 GFLOP/s of a 4096 x 4096 matrix product here."""
    a = tf.random.uniform((4096, 4096))
    b = tf.random.uniform((4096, 4096))
    tf.matmul(a, b).numpy()
    rates = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        rates.append(2 * 4096**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def overhead_rows(x, y):
    rows = []
    resnet_flops = forward_flops(PEER(num_classes=100), (32, 32, 3))
    peak = matmul_rate()
    for k in COHORT_SIZES["overhead"]:
        keras.backend.clear_session()
        dml, separate, ratio = interleaved(
            _stepper([cohort(k)], x, y), _stepper(alone(k), x, y)
        )
        gflops = training_flops(resnet_flops) * k * BATCH / dml / 1e9
        rows.append((k, dml, separate, ratio, gflops, gflops / peak))
    return rows, peak, resnet_flops


def sequential_rows(x, y):
    rows = []
    for k in COHORT_SIZES["sequential"]:
        keras.backend.clear_session()
        seq, sim, ratio = interleaved(
            _stepper([cohort(k, "sequential")], x, y), _stepper([cohort(k)], x, y)
        )
        rows.append((k, seq, sim, ratio))
    return rows


class _UncheckedLabels(keras_dml.MutualLearningModel):
    """The cohort with the label check replaced by the cast it wraps."""

    def _checked(self, y, logits):
        return tf.reshape(tf.cast(y, tf.int32), [-1])


def label_check_row(x, y):
    keras.backend.clear_session()
    checked = cohort(2)
    unchecked = _UncheckedLabels([PEER(num_classes=100) for _ in range(2)])
    unchecked.compile(_optimizer())
    return interleaved(_stepper([checked], x, y), _stepper([unchecked], x, y))


def bf16_row(x, y):
    keras.backend.clear_session()
    fp32 = _stepper([cohort(2)], x, y)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    bf16 = _stepper([cohort(2)], x, y)
    keras.mixed_precision.set_global_policy("float32")
    return interleaved(bf16, fp32)


def quickstart_accuracy(policy):
    from keras_dml.training import config as settings
    from keras_dml.training.quickstart import run_quickstart

    with tempfile.TemporaryDirectory() as directory:
        base = settings.resolve(
            {
                "dataset": "digits",
                "model_dir": directory,
                "mixed_precision": policy == "mixed_bfloat16",
                "verbose": 0,
                "export": False,
            }
        )
        results = run_quickstart(
            base, FLAGS.quickstart_seeds, directory, print_fn=lambda *_: None
        )
    keras.mixed_precision.set_global_policy("float32")
    return {
        f"{label} {name}": statistics.fmean(s[name] for s in runs)
        for label, runs in results["scores"].items()
        for name in runs[0]
    }


def memory_of(peers):
    """Peak resident memory (MB) of a fresh process training `peers` peers."""
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            f"--memory_peers={peers}",
            "--memory_steps=3",
            f"--smoke={FLAGS.smoke}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _high_water_mb():
    # VmHWM belongs to this process image; ru_maxrss would carry over the
    # parent's peak across fork and exec.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_memory():
    x, y = _batch()
    baseline = _high_water_mb()
    if FLAGS.memory_peers == 1:
        model = alone(1)[0]
    else:
        model = cohort(FLAGS.memory_peers)
    for _ in range(FLAGS.memory_steps):
        model.train_on_batch(x, y)
    peak = _high_water_mb()
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak}))


def print_overhead(overhead, peak, resnet_flops):
    print(
        f"Batch {BATCH}, 32x32x3, SGD + Nesterov; median of {FLAGS.repeats} interleaved"
    )
    print(
        f"repeats of {FLAGS.steps} steps. ResNet-32: {resnet_flops / 1e6:.1f} MFLOPs "
        "forward."
    )
    print(f"float32 matmul (4096^2) here: {peak:,.0f} GFLOP/s.\n")
    print(
        "| K | DML step (s) | K peers alone (s) | DML / alone | model GFLOP/s | MFU |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for k, dml, separate, ratio, gflops, mfu in overhead:
        print(
            f"| {k} | {dml:.3f} | {separate:.3f} | {ratio:.3f} | {gflops:.0f} "
            f"| {mfu:.2f} |"
        )


def print_sequential(sequential):
    print("\n| K | sequential (s) | simultaneous (s) | ratio | forward passes |")
    print("| --- | ---: | ---: | ---: | --- |")
    for k, seq, sim, ratio in sequential:
        print(f"| {k} | {seq:.3f} | {sim:.3f} | {ratio:.2f} | {2 * k - 1} vs {k} |")


def print_bf16(row):
    bf16, fp32, bf16_ratio = row
    print(
        f"\nmixed_bfloat16 {bf16:.3f} s vs float32 {fp32:.3f} s per K=2 step: "
        f"{1 / bf16_ratio:.2f}x speed-up."
    )
    accuracy = {}
    if FLAGS.quickstart_seeds:
        accuracy = {p: quickstart_accuracy(p) for p in ("float32", "mixed_bfloat16")}
    for policy, scores in accuracy.items():
        print(
            f"quickstart test accuracy under {policy} ({FLAGS.quickstart_seeds} "
            "seeds): "
            + ", ".join(f"{label} {100 * v:.3f}%" for label, v in scores.items())
        )


def print_label_check(row):
    checked, unchecked, ratio = row
    print(
        f"\nlabel check: {checked:.3f} s vs {unchecked:.3f} s without it per K=2 "
        f"step: {ratio:.3f}x."
    )


def print_memory(memory):
    print("\n| peers | peak RSS (MB) | above the TensorFlow baseline (MB) |")
    print("| --- | ---: | ---: |")
    for k, m in memory.items():
        print(f"| {k} | {m['peak_mb']:,.0f} | {m['peak_mb'] - m['baseline_mb']:,.0f} |")


def main(argv):
    del argv  # Unused.
    if FLAGS.smoke:
        _smoke_settings()
    if FLAGS.memory_steps:
        return measure_memory()
    x, y = _batch()
    parts = set(FLAGS.parts)
    print(f"\nMachine: {machine()}")
    if "overhead" in parts:
        print_overhead(*overhead_rows(x, y))
    if "sequential" in parts:
        print_sequential(sequential_rows(x, y))
    if "bf16" in parts:
        print_bf16(bf16_row(x, y))
    if "labels" in parts:
        print_label_check(label_check_row(x, y))
    if "memory" in parts:
        print_memory({k: memory_of(k) for k in COHORT_SIZES["memory"]})


if __name__ == "__main__":
    app.run(main)
