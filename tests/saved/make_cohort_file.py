"""Writes tests/saved/cohort_2026-12-03.keras and its expected outputs: a
cohort saved by the code of 2026-12-03 (before keras_dml's modules moved into
wings), which tests/test_saving.py loads with today's code. Kept to show how
the file was made; running it again overwrites both files.

python tests/saved/make_cohort_file.py
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_dml  # noqa: E402
from tests.helpers import data, dense_peer  # noqa: E402


def main():
    model = keras_dml.MutualLearningModel(
        [dense_peer(1, batchnorm=True), dense_peer(3)],
        mimicry=keras_dml.mimicry.get("temporal_mean", decay=0.5),
        kl_weight=0.7,
        temperature=2.0,
        kl_ramp_up_steps=4,
    )
    model.compile(
        [keras.optimizers.SGD(0.1, momentum=0.9), keras.optimizers.Adam(1e-2)],
        metrics=["accuracy"],
    )
    x, y = data(16, seed=7)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    model.save(os.path.join(HERE, "cohort_2026-12-03.keras"))
    outputs = model.predict(x, verbose=0)
    np.savez(
        os.path.join(HERE, "cohort_2026-12-03.npz"),
        x=x,
        y=y,
        **{f"output/{i}": np.asarray(v) for i, v in enumerate(outputs)},
        **{f"weight/{i}": np.asarray(w) for i, w in enumerate(model.get_weights())},
    )


if __name__ == "__main__":
    main()
