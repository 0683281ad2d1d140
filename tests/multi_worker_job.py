"""One worker of the multi-worker test (run as a subprocess by
test_multi_worker.py): trains a peer pair without BatchNorm for a few steps
on the CIFAR pipeline and saves the final weights.

python tests/multi_worker_job.py OUTPUT.npz [CHECKPOINT_DIR [EPOCHS]]

With TF_CONFIG set, runs under MultiWorkerMirroredStrategy with each worker
feeding its slice of every global batch; without it, one process trains on
the same global batches. With CHECKPOINT_DIR, every worker first resumes from
the chief's checkpoint there, and the chief checkpoints every epoch; EPOCHS
(default 2) is where training stops.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_dml  # noqa: E402
from keras_dml.backends.tensorflow import TensorFlowDevices  # noqa: E402
from keras_dml.callbacks import EpochCheckpoint  # noqa: E402
from keras_dml.data import array_dataset  # noqa: E402
from keras_dml.datasets import cifar100  # noqa: E402

GLOBAL_BATCH, STEPS, EPOCHS, SEED = 8, 3, 2, 5


def peer(name):
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ],
        name=name,
    )


def main(output, checkpoint_dir=None, epochs=EPOCHS):
    epochs = int(epochs)
    multi_worker = "TF_CONFIG" in os.environ
    strategy = (
        tf.distribute.MultiWorkerMirroredStrategy()
        if multi_worker
        else tf.distribute.get_strategy()
    )
    rng = np.random.default_rng(0)
    images = rng.integers(
        0, 256, size=(GLOBAL_BATCH * STEPS, 32, 32, 3), dtype=np.uint8
    )
    labels = rng.integers(0, 10, size=len(images))
    # Labels < 0 are unlabeled: workers see different numbers of labeled
    # examples, which the loss normalization must handle.
    labels[::5] = -1

    def make(input_context=None):
        return array_dataset(
            images,
            labels,
            batch_size=GLOBAL_BATCH,
            mean=cifar100.MEAN,
            std=cifar100.STD,
            augment=True,
            shuffle=True,
            seed=SEED,
            drop_remainder=True,
            epochs=EPOCHS,
            initial_epoch=initial_epoch,
            input_context=input_context,
        )

    keras.utils.set_random_seed(SEED)  # Same initial weights everywhere.
    with strategy.scope():
        model = keras_dml.MutualLearningModel([peer("a"), peer("b")])
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"])
    callbacks, initial_epoch = [], 0
    if checkpoint_dir:
        checkpoint = EpochCheckpoint(
            TensorFlowDevices(strategy).writable_dir(checkpoint_dir)
        )
        with strategy.scope():
            initial_epoch = checkpoint.restore(model, checkpoint_dir)
        callbacks.append(checkpoint)
    dataset = (
        strategy.distribute_datasets_from_function(make) if multi_worker else make()
    )
    history = model.fit(
        dataset,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=STEPS,
        verbose=0,
        callbacks=callbacks,
    ).history
    np.savez(
        output,
        *[v.numpy() for v in model.trainable_variables],
        chief=TensorFlowDevices(strategy).is_chief,
        losses=np.array([history[f"peer{i}_loss"] for i in range(2)]),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
