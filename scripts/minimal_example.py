r"""Deep Mutual Learning in a dozen lines, on data made on the spot (no download).

python scripts/minimal_example.py

Trains two small MLP peers on a synthetic 10-class problem twice, with DML
(kl_weight=1) and independently (kl_weight=0), from the same initial weights,
and prints each peer's and the ensemble's test accuracy. Takes ~10 s on a
2-core CPU. The numbers are whatever this run measures.
"""

import keras
import numpy as np

import keras_dml

NUM_CLASSES, NUM_FEATURES = 10, 20


def make_data(num_examples, rng, centers):
    labels = rng.integers(0, NUM_CLASSES, size=num_examples)
    features = centers[labels] + rng.normal(
        scale=2.0, size=(num_examples, NUM_FEATURES)
    )
    return features.astype("float32"), labels.astype("int32")


def make_peer(hidden, seed):
    return keras.Sequential(
        [
            keras.Input((NUM_FEATURES,)),
            keras.layers.Dense(
                hidden,
                activation="relu",
                kernel_initializer=keras.initializers.HeNormal(seed),
            ),
            keras.layers.Dropout(0.3, seed=seed),
            keras.layers.Dense(
                NUM_CLASSES, kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
        ]
    )


def main():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(NUM_CLASSES, NUM_FEATURES))
    x_train, y_train = make_data(500, rng, centers)
    x_test, y_test = make_data(5000, rng, centers)

    for kl_weight in (1.0, 0.0):
        keras.utils.set_random_seed(0)
        peers = [make_peer(64, seed=1), make_peer(128, seed=2)]
        model = keras_dml.MutualLearningModel(peers, kl_weight=kl_weight)
        model.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
            metrics=["accuracy"],
        )
        model.fit(x_train, y_train, batch_size=32, epochs=30, verbose=0)
        logs = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
        label = "DML        " if kl_weight else "independent"
        print(
            f"{label}  peer0 {logs['peer0_accuracy']:.4f}  "
            f"peer1 {logs['peer1_accuracy']:.4f}  "
            f"ensemble {logs['ensemble_accuracy']:.4f}"
        )


if __name__ == "__main__":
    main()
