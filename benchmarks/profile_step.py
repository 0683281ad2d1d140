r"""Where a DML training step's time goes, by TensorFlow op type.

python benchmarks/profile_step.py [--peers=2] [--steps=5] [--keras_batchnorm]

Traces `--steps` MutualLearningModel steps of ResNet-32 peers (batch 64,
32x32x3) with TensorFlow's profiler and prints each op type's share of the
time the executor threads spent running ops. `--keras_batchnorm` builds the
peers with Keras's BatchNormalization instead of the fused one, to show what
that costs.
"""

import collections
import glob
import os
import tempfile

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402
from timing import machine  # noqa: E402

import keras_dml  # noqa: E402
from keras_dml.models import common  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("peers", 2, "ResNet-32 peers in the cohort.")
flags.DEFINE_integer("steps", 5, "Profiled training steps.")
flags.DEFINE_integer("top", 15, "Op types to list.")
flags.DEFINE_bool(
    "keras_batchnorm", False, "Build the peers with keras.layers.BatchNormalization."
)

flags.DEFINE_bool(
    "smoke",
    False,
    "Tiny settings (ResNet-8, batch 8, one step): checks that the script "
    "runs, as the test suite does; the numbers mean nothing.",
)

BATCH = 64
PEER = "resnet32"
# Profiler events that wrap ops rather than run them.
_WRAPPERS = {"Process", "ExecutorDoneCallback"}


def _peer():
    if not FLAGS.keras_batchnorm:
        return keras_dml.models.get(PEER, num_classes=100)
    fused = common.FusedBatchNormalization
    common.FusedBatchNormalization = keras.layers.BatchNormalization
    try:
        return keras_dml.models.get(PEER, num_classes=100)
    finally:
        common.FusedBatchNormalization = fused


def op_times(logdir):
    """{op type: seconds} summed over the executor threads of the trace."""
    (path,) = glob.glob(os.path.join(logdir, "plugins/profile/*/*.xplane.pb"))
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    (host,) = [p for p in space.planes if p.name == "/host:CPU"]
    names = {key: meta.name for key, meta in host.event_metadata.items()}
    times = collections.Counter()
    for line in host.lines:
        if not line.name.startswith("tf_Compute"):
            continue
        for event in line.events:
            op_type = names[event.metadata_id].split(":")[-1]
            if op_type not in _WRAPPERS:
                times[op_type] += event.duration_ps / 1e12
    return times


def main(argv):
    del argv  # Unused.
    global BATCH, PEER
    if FLAGS.smoke:
        BATCH, PEER, FLAGS.steps = 8, "resnet8", 1
    x = tf.random.uniform((BATCH, 32, 32, 3))
    y = tf.random.uniform((BATCH,), maxval=100, dtype=tf.int32)
    model = keras_dml.MutualLearningModel([_peer() for _ in range(FLAGS.peers)])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    for _ in range(3):
        model.train_on_batch(x, y)  # Build and trace before profiling.
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(FLAGS.steps):
            model.train_on_batch(x, y)
        tf.profiler.experimental.stop()
        times = op_times(logdir)
    total = sum(times.values())
    batchnorm = "Keras" if FLAGS.keras_batchnorm else "fused"
    print(f"\nMachine: {machine()}")
    print(
        f"{FLAGS.peers} {PEER} peers, {batchnorm} BatchNorm, batch {BATCH}: "
        f"{1e3 * total / FLAGS.steps:.0f} ms of op time per step (all threads)\n"
    )
    print("| op type | ms / step | share |")
    print("| --- | ---: | ---: |")
    for op_type, seconds in times.most_common(FLAGS.top):
        print(
            f"| {op_type} | {1e3 * seconds / FLAGS.steps:.1f} "
            f"| {100 * seconds / total:.1f}% |"
        )
    rest = total - sum(s for _, s in times.most_common(FLAGS.top))
    print(f"| (other) | {1e3 * rest / FLAGS.steps:.1f} | {100 * rest / total:.1f}% |")


if __name__ == "__main__":
    app.run(main)
