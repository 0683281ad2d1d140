"""One process of tests/test_backends.py: trains the same cohorts for two
steps on the Keras backend named by KERAS_BACKEND and saves every weight.

python tests/backend_step_job.py OUT.npz [--init INIT.npz] [--data_parallel]
    [--save COHORT.keras | --load COHORT.keras]

Without --init, the cohorts' initial weights are saved to OUT's
`<case>/init/<i>` entries; with it, each cohort starts from those (initial
weights are drawn differently on each backend). --data_parallel then trains
the same cases again under `keras.distribution.DataParallel` over every
device (the test gives JAX two host devices) and stores them under
`parallel/`: in the same process, one start-up less. --save writes the
last cohort as a .keras file, --load reads one written on another backend;
either stores its weights and optimizer state in OUT's `keras_file/`
entries.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_dml  # noqa: E402
from tests.helpers import (  # noqa: E402
    NUM_CLASSES,
    NUM_FEATURES,
    data,
    dense_branches,
    dense_peer,
)

# (name, update, mimicry, unlabeled examples per batch of 8)
CASES = (
    ("simultaneous", "simultaneous", "pairwise", 0),
    ("sequential", "sequential", "pairwise", 0),
    ("simultaneous_unlabeled", "simultaneous", "pairwise", 3),
    ("sequential_unlabeled", "sequential", "pairwise", 3),
    ("kdcl_sequential", "sequential", "kdcl", 3),
    ("temporal_mean", "simultaneous", "temporal_mean", 3),
    # A branch cohort: a shared trunk with BatchNorm, ONE's trained gate.
    ("one_branches", "simultaneous", "one", 3),
    # OKDDip: attention over the branches' own features, targets trained.
    ("okddip_branches", "simultaneous", "okddip", 3),
)


def auxiliary_peer(seed):
    """A peer with an auxiliary classifier and an L2-regularized kernel."""
    init = keras.initializers.GlorotUniform
    inputs = keras.Input((NUM_FEATURES,))
    hidden = keras.layers.Dense(
        8,
        activation="tanh",
        kernel_initializer=init(seed),
        kernel_regularizer=keras.regularizers.L2(1e-2),
    )(inputs)
    logits = keras.layers.Dense(NUM_CLASSES, kernel_initializer=init(seed + 1))(hidden)
    aux = keras.layers.Dense(NUM_CLASSES, kernel_initializer=init(seed + 2))(hidden)
    return keras.Model(inputs, {"logits": logits, "aux_logits": aux})


def cohort(update, mimicry):
    trunk = None
    if mimicry == "one":
        trunk, peers = dense_branches(3, seed=1, batchnorm=True)
    elif mimicry == "okddip":
        trunk, peers = dense_branches(3, seed=1, batchnorm=True, hidden=4)
    else:
        peers = [dense_peer(1, batchnorm=True), dense_peer(3), auxiliary_peer(5)]
    method = keras_dml.mimicry.get(
        mimicry, **({"decay": 0.5} if mimicry == "temporal_mean" else {})
    )
    model = keras_dml.MutualLearningModel(
        peers,
        trunk=trunk,
        kl_weight=0.7,
        temperature=2.0,
        label_smoothing=0.1,
        mimicry=method,
        update=update,
    )
    model.compile(
        [
            keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
            keras.optimizers.Adam(1e-2),
            keras.optimizers.SGD(0.2),
            *([keras.optimizers.SGD(0.1, momentum=0.9)] if trunk else []),
        ]
    )
    return model


def train_cases(init, prefix=""):
    """Two steps of every case, from `init`'s weights or (without it) from
    new ones, stored under `<case>/init/`. Returns the entries to save and
    the last cohort."""
    saved = {}
    for name, update, mimicry, unlabeled in CASES:
        model = cohort(update, mimicry)
        if init is None:
            weights = model.get_weights()
            saved.update({f"{name}/init/{i}": w for i, w in enumerate(weights)})
        else:
            count = sum(key.startswith(f"{name}/init/") for key in init)
            model.set_weights([init[f"{name}/init/{i}"] for i in range(count)])
        x, y = data(16, seed=7, unlabeled=2 * unlabeled)
        for step in range(2):
            batch = slice(8 * step, 8 * (step + 1))
            logs = model.train_on_batch(x[batch], y[batch], return_dict=True)
        saved[f"{prefix}{name}/loss"] = np.float32(logs["loss"])
        for i, weight in enumerate(model.get_weights()):
            saved[f"{prefix}{name}/after/{i}"] = np.asarray(weight)
    return saved, model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--init")
    parser.add_argument("--data_parallel", action="store_true")
    parser.add_argument("--save")
    parser.add_argument("--load")
    args = parser.parse_args()
    init = None
    if args.init:
        init = {k: v for k, v in np.load(args.init).items() if "/init/" in k}
    saved, model = train_cases(init)
    # Mixed precision (bfloat16 on CPU): the cohort trains, losses finite.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    mixed = cohort("simultaneous", "pairwise")
    keras.mixed_precision.set_global_policy("float32")
    x, y = data(64, seed=9, unlabeled=8)
    history = mixed.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False)
    saved["bfloat16/losses"] = np.asarray(history.history["loss"], "float32")
    if args.save:
        model.save(args.save)
    if args.load:
        model = keras.saving.load_model(args.load)
    if args.save or args.load:
        state = [*model.get_weights(), *(v.numpy() for v in model.optimizer.variables)]
        saved.update({f"keras_file/{i}": np.asarray(v) for i, v in enumerate(state)})
    print(f"{keras.backend.backend()} on 1 device")
    if args.data_parallel:
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        parallel, _ = train_cases(init, prefix="parallel/")
        saved.update(parallel)
        devices = len(keras.distribution.list_devices())
        print(f"{keras.backend.backend()} on {devices} devices in parallel")
    if init is not None:
        saved.update(init)
    np.savez(args.out, **saved)


if __name__ == "__main__":
    main()
