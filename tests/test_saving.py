"""Saving and restoring a cohort: config, .keras, weights files, BackupAndRestore."""

import os

import keras
import numpy as np
import pytest

import keras_dml
from keras_dml.mimicry import name_of
from tests.helpers import assert_weights_close, data, dense_peer


def trained_cohort(epochs=2, **kwargs):
    peers = [dense_peer(1, batchnorm=True), dense_peer(2), dense_peer(3)]
    model = keras_dml.MutualLearningModel(
        peers, kl_weight=0.5, temperature=2.0, mimicry="ensemble", **kwargs
    )
    model.compile(
        [
            keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
            keras.optimizers.Adam(1e-2),
            keras.optimizers.SGD(
                keras.optimizers.schedules.ExponentialDecay(0.1, 3, 0.5)
            ),
        ],
        metrics=["accuracy"],
    )
    x, y = data(32, unlabeled=3)
    model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)
    return model, (x, y)


def assert_same_optimizer_state(a, b):
    for opt_a, opt_b in zip(a.peer_optimizers, b.peer_optimizers):
        assert type(opt_a) is type(opt_b)
        assert len(opt_a.variables) == len(opt_b.variables) >= 1
        for u, v in zip(opt_a.variables, opt_b.variables):
            np.testing.assert_array_equal(u.numpy(), v.numpy(), err_msg=u.path)


def test_config_round_trip():
    model, _ = trained_cohort(epochs=0, update="sequential", label_smoothing=0.1)
    config = model.get_config()
    clone = keras_dml.MutualLearningModel.from_config(config)
    assert clone.get_config() == config
    assert clone.mimicry.get_config() == model.mimicry.get_config()
    assert (
        clone.kl_weight,
        clone.temperature,
        name_of(clone.mimicry),
        clone.update,
    ) == (
        0.5,
        2.0,
        "ensemble",
        "sequential",
    )
    assert clone.label_smoothing == 0.1


def test_keras_file_round_trip_restores_weights_optimizers_and_training(tmp_path):
    model, (x, y) = trained_cohort(update="sequential")
    path = str(tmp_path / "cohort.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert isinstance(loaded, keras_dml.MutualLearningModel)
    assert (
        loaded.kl_weight,
        loaded.temperature,
        name_of(loaded.mimicry),
        loaded.update,
    ) == (
        0.5,
        2.0,
        "ensemble",
        "sequential",
    )
    assert_weights_close(model.get_weights(), loaded.get_weights(), rtol=0, atol=0)
    assert [int(o.iterations) for o in loaded.peer_optimizers] == [8, 8, 8]
    assert_same_optimizer_state(model, loaded)
    assert set(loaded.evaluate(x, y, verbose=0, return_dict=True)) == set(
        model.evaluate(x, y, verbose=0, return_dict=True)
    )

    # Training goes on exactly as it would have without the round trip.
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert_weights_close(model.get_weights(), loaded.get_weights())


def test_weights_file_round_trip_includes_optimizer_state(tmp_path):
    model, (x, y) = trained_cohort()
    path = str(tmp_path / "cohort.weights.h5")
    model.save_weights(path)

    fresh = keras_dml.MutualLearningModel.from_config(model.get_config())
    fresh.compile(
        [
            keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
            keras.optimizers.Adam(1e-2),
            keras.optimizers.SGD(
                keras.optimizers.schedules.ExponentialDecay(0.1, 3, 0.5)
            ),
        ]
    )
    fresh.load_weights(path)
    assert_weights_close(model.get_weights(), fresh.get_weights(), rtol=0, atol=0)
    assert_same_optimizer_state(model, fresh)


class _StopAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def _backup_cohort():
    peers = [dense_peer(4, batchnorm=True), dense_peer(5, batchnorm=True)]
    model = keras_dml.MutualLearningModel(peers, kl_weight=1.0)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"])
    return model


def test_backup_and_restore_resumes_exactly(tmp_path):
    x, y = data(32, seed=11)
    uninterrupted = _backup_cohort()
    uninterrupted.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)

    keras.utils.set_random_seed(1234)
    crashed = _backup_cohort()
    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit(
            x,
            y,
            batch_size=8,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup), _StopAtEpoch(2)],
        )
    resumed = _backup_cohort()  # fresh weights: everything comes from the backup
    history = resumed.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup)],
    )
    assert len(history.history["loss"]) == 1  # only epoch 3 was left
    assert [int(o.iterations) for o in resumed.peer_optimizers] == [12, 12]
    assert_weights_close(uninterrupted.get_weights(), resumed.get_weights())
    for a, b in zip(uninterrupted.peer_optimizers, resumed.peer_optimizers):
        assert_weights_close(
            [v.numpy() for v in a.variables], [v.numpy() for v in b.variables]
        )


SAVED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "saved")


def test_a_cohort_saved_by_earlier_code_still_loads_and_trains():
    """tests/saved/cohort_2026-12-03.keras was written by the code of that
    day (tests/saved/make_cohort_file.py), before keras_dml's modules moved
    into wings: the file names classes by their registered names, so it
    loads whatever module they live in now."""
    model = keras.saving.load_model(os.path.join(SAVED, "cohort_2026-12-03.keras"))
    want = np.load(os.path.join(SAVED, "cohort_2026-12-03.npz"))
    assert isinstance(model, keras_dml.MutualLearningModel)
    assert name_of(model.mimicry) == "temporal_mean" and model.kl_ramp_up_steps == 4
    weights = model.get_weights()
    assert len(weights) == sum(k.startswith("weight/") for k in want)
    for i, weight in enumerate(weights):
        np.testing.assert_array_equal(weight, want[f"weight/{i}"])
    for i, output in enumerate(model.predict(want["x"], verbose=0)):
        np.testing.assert_allclose(output, want[f"output/{i}"], rtol=1e-6, atol=1e-6)
    # Compiled as saved: both peer optimizers' state, one step on from it.
    assert int(model.optimizer.iterations) == 2
    logs = model.train_on_batch(want["x"][:8], want["y"][:8], return_dict=True)
    assert np.isfinite(logs["loss"]) and int(model.optimizer.iterations) == 3
