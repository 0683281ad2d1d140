r"""Input pipeline throughput against what DML training consumes.

python benchmarks/input_pipeline.py [--repeats=5] [--market_images=2000]

Measures images/s of
- the CIFAR-100 training pipeline (50,000 in-memory uint8 images, pad/crop/
  flip, normalize, batch 64),
- the Market-1501 training pipeline (JPEGs on disk, 128x64 resized to 256x128,
  flip, normalize, batch 32; and with random erasing),
- a DML training step of two ResNet-32 peers (batch 64, 32x32) and of two
  MobileNet v1 re-ID peers (`reid_mobilenet`, batch 32, 256x128, 751 classes),
and prints the ratios (pipeline / training) as a markdown table for
BENCHMARKS.md. The target is >= 5x. Takes a few minutes on 2 cores.
"""

import os
import tempfile

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import machine, median_rate  # noqa: E402

import keras_dml  # noqa: E402
from keras_dml.data import array_dataset  # noqa: E402
from keras_dml.datasets import cifar100  # noqa: E402
from keras_dml.datasets.market1501 import market1501_dataset  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Timed runs per figure (the median is reported).")
flags.DEFINE_integer("market_images", 2000, "Fake Market-1501 JPEGs written to disk.")
flags.DEFINE_integer("pipeline_batches", 150, "Batches per timed pipeline run.")
flags.DEFINE_integer("train_steps", 5, "Training steps per timed run.")
flags.DEFINE_bool(
    "smoke",
    False,
    "Tiny settings (few images, ResNet-8, small re-ID images, one repeat): "
    "checks that the script runs, as the test suite does; numbers mean nothing.",
)

# Sizes of the measured set-up; --smoke shrinks them.
SIZES = {
    "cifar_images": 50_000,
    "cifar_peer": "resnet32",
    "market_batch": 32,
    "reid_shape": (256, 128, 3),
}


def _smoke_settings():
    SIZES.update(
        cifar_images=512, cifar_peer="resnet8", market_batch=4, reid_shape=(64, 32, 3)
    )
    FLAGS.market_images, FLAGS.pipeline_batches = 16, 2
    FLAGS.train_steps, FLAGS.repeats = 1, 1


def _drain(dataset, batches):
    iterator = iter(dataset)

    def run():
        for _ in range(batches):
            next(iterator)

    run()  # Warm up: tracing, thread pools, first prefetches.
    return run


def cifar_pipeline_rate():
    rng = np.random.default_rng(0)
    count = SIZES["cifar_images"]
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, size=count)
    dataset = array_dataset(
        images,
        labels,
        batch_size=64,
        mean=cifar100.MEAN,
        std=cifar100.STD,
        augment=True,
        shuffle=True,
        seed=0,
        drop_remainder=True,
        epochs=1000,
    )
    run = _drain(dataset, FLAGS.pipeline_batches)
    return median_rate(run, 64 * FLAGS.pipeline_batches, FLAGS.repeats)


def write_fake_market(directory, count):
    folder = os.path.join(directory, "bounding_box_train")
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 256, size=(128, 64, 3), dtype=np.uint8)
        name = f"{i // 8 + 1:04d}_c{i % 6 + 1}s1_{i:06d}_01.jpg"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(tf.io.encode_jpeg(image, quality=90).numpy())
    return directory


def market_pipeline_rate(root, random_erasing):
    batch = SIZES["market_batch"]
    dataset = market1501_dataset(
        root,
        "train",
        batch_size=batch,
        seed=0,
        epochs=1000,
        random_erasing=random_erasing,
    )
    batches = min(FLAGS.pipeline_batches, FLAGS.market_images // batch)
    run = _drain(dataset, batches)
    return median_rate(run, batch * batches, FLAGS.repeats)


def dml_step_rate(peers, input_shape, num_classes, batch_size):
    model = keras_dml.MutualLearningModel(peers)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    x = tf.random.uniform((batch_size, *input_shape))
    y = tf.random.uniform((batch_size,), maxval=num_classes, dtype=tf.int32)
    model.train_on_batch(x, y)  # Build and trace.

    def run():
        for _ in range(FLAGS.train_steps):
            model.train_on_batch(x, y)

    return median_rate(run, batch_size * FLAGS.train_steps, FLAGS.repeats)


def main(argv):
    del argv  # Unused.
    if FLAGS.smoke:
        _smoke_settings()
    rows = []
    cifar_pipe, _ = cifar_pipeline_rate()
    cifar_train, _ = dml_step_rate(
        [keras_dml.models.get(SIZES["cifar_peer"], num_classes=100) for _ in range(2)],
        (32, 32, 3),
        100,
        64,
    )
    rows.append(("CIFAR-100 (batch 64)", cifar_pipe, "2 x ResNet-32", cifar_train))
    with tempfile.TemporaryDirectory() as directory:
        root = write_fake_market(directory, FLAGS.market_images)
        market_pipe, _ = market_pipeline_rate(root, 0.0)
        market_erase, _ = market_pipeline_rate(root, 0.5)
    market_train, _ = dml_step_rate(
        [
            keras_dml.models.reid_mobilenet(
                751, input_shape=SIZES["reid_shape"], weights=None
            )
            for _ in range(2)
        ],
        SIZES["reid_shape"],
        751,
        SIZES["market_batch"],
    )
    rows.append(
        (
            "Market-1501 (batch 32, JPEGs on disk)",
            market_pipe,
            "2 x MobileNet",
            market_train,
        )
    )
    rows.append(
        (
            "Market-1501 + random erasing 0.5",
            market_erase,
            "2 x MobileNet",
            market_train,
        )
    )

    print(f"\nMachine: {machine()}")
    print(f"Median of {FLAGS.repeats} runs.\n")
    print(
        "| pipeline | pipeline images/s | training step | training images/s | ratio |"
    )
    print("| --- | ---: | --- | ---: | ---: |")
    for pipeline, pipe_rate, trainer, train_rate in rows:
        print(
            f"| {pipeline} | {pipe_rate:,.0f} | {trainer} | {train_rate:,.1f} | "
            f"{pipe_rate / train_rate:,.0f}x |"
        )


if __name__ == "__main__":
    app.run(main)
