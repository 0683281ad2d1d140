r"""How long the paper's CIFAR-100 table takes: measured here, estimated on a GPU.

python benchmarks/cifar_table_time.py [--repeats=5] [--steps=3]

For every pair of scripts/reproduce_table.py, measures the DML training step
(batch 64, 32x32, float32) on this machine (median of --repeats timings of
--steps steps) and counts the model FLOPs. Prints per pair: FLOPs per image,
seconds per step, hours for 200 epochs on this CPU, and a GPU estimate from
the FLOPs at an assumed sustained rate (--gpu_tflops), since no GPU is
reachable here. Each table row is two runs (independent and DML).
"""

import os

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from flops import forward_flops, training_flops  # noqa: E402
from timing import machine, median_rate  # noqa: E402

import keras_dml  # noqa: E402
from keras_dml.training.reproduce import PAPER_CIFAR100  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Timed runs per pair (median reported).")
flags.DEFINE_integer("steps", 3, "Training steps per timed run.")
flags.DEFINE_float(
    "gpu_tflops",
    6.0,
    "Assumed sustained training rate of one GPU (e.g. a V100's 15.7 TFLOP/s peak "
    "at ~40% on these small convolutions).",
)
flags.DEFINE_list("pairs", ["+".join(p) for p in PAPER_CIFAR100], "Pairs to measure.")

BATCH, EPOCHS, TRAIN, TEST = 64, 200, 50_000, 10_000


def measure(pair):
    keras.backend.clear_session()
    peers = [keras_dml.models.get(name, num_classes=100) for name in pair]
    flops = sum(forward_flops(p, (32, 32, 3)) for p in peers)
    model = keras_dml.MutualLearningModel(peers)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    x = tf.random.uniform((BATCH, 32, 32, 3))
    y = tf.random.uniform((BATCH,), maxval=100, dtype=tf.int32)
    model.train_on_batch(x, y)

    def run():
        for _ in range(FLAGS.steps):
            model.train_on_batch(x, y)

    rate, _ = median_rate(run, FLAGS.steps, FLAGS.repeats)
    return flops, 1.0 / rate


def main(argv):
    del argv  # Unused.
    rows = []
    for text in FLAGS.pairs:
        pair = tuple(text.split("+"))
        flops, step_seconds = measure(pair)
        steps = EPOCHS * (TRAIN // BATCH)
        # Evaluation on the test set every epoch: a forward pass, ~1/3 of a step.
        eval_steps = EPOCHS * (TEST // BATCH) / 3
        cpu_hours = (steps + eval_steps) * step_seconds / 3600
        run_flops = training_flops(flops) * (EPOCHS * TRAIN + EPOCHS * TEST / 3)
        gpu_hours = run_flops / (FLAGS.gpu_tflops * 1e12) / 3600
        rows.append((text, flops, step_seconds, cpu_hours, gpu_hours))
        print(f"{text}: {step_seconds:.3f} s/step", flush=True)

    print(f"\nMachine: {machine()}")
    print(f"Median of {FLAGS.repeats} runs of {FLAGS.steps} steps; batch {BATCH}.\n")
    print(
        "| pair | forward GFLOPs / image (both peers) | s / step here | "
        "one 200-epoch run here (h) | one run on a GPU, estimated (h) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for text, flops, step, cpu, gpu in rows:
        print(f"| {text} | {flops / 1e9:.2f} | {step:.3f} | {cpu:,.1f} | {gpu:.1f} |")
    total_cpu = 2 * sum(r[3] for r in rows)
    total_gpu = 2 * sum(r[4] for r in rows)
    print(
        f"\nWhole table (independent + DML per pair): {total_cpu:,.0f} h here, "
        f"~{total_gpu:.0f} h on one GPU at {FLAGS.gpu_tflops} TFLOP/s sustained."
    )


if __name__ == "__main__":
    app.run(main)
