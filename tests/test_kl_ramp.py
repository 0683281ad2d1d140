"""The ramp-up and burn-in of the mimicry weight (keras_dml.cohort.kl_ramp), on
every backend (a core file)."""

import keras
import numpy as np
import pytest

import keras_dml
from keras_dml.cohort import kl_ramp
from tests.helpers import data, dense_peer


@pytest.mark.parametrize("shape", kl_ramp.SHAPES)
@pytest.mark.parametrize("ramp_up, burn_in", [(0, 0), (10, 0), (10, 4), (0, 3)])
def test_the_factor_matches_its_formula(shape, ramp_up, burn_in):
    for step in range(0, 20):
        got = kl_ramp.factor(step, ramp_up, burn_in, shape)
        got = float(keras.ops.convert_to_numpy(got))
        want = kl_ramp.reference(step, ramp_up, burn_in, shape)
        assert got == pytest.approx(want, abs=1e-6), (step, got, want)
    assert kl_ramp.reference(4, 10, 4, "sigmoid") == pytest.approx(np.exp(-5))
    assert kl_ramp.reference(9, 10, 4, "linear") == pytest.approx(0.5)


def _cohort(**kwargs):
    model = keras_dml.MutualLearningModel([dense_peer(1), dense_peer(3)], **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


@pytest.mark.parametrize("update", ["simultaneous", "sequential"])
def test_during_burn_in_the_peers_train_independently(update):
    # Steps before kl_burn_in_steps have factor 0: the same weights as
    # kl_weight=0; after it, the same as DML from there on.
    x, y = data(32)
    keras.utils.set_random_seed(0)
    burned = _cohort(kl_burn_in_steps=2, update=update)
    burned.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    keras.utils.set_random_seed(0)
    alone = _cohort(kl_weight=0.0, update=update)
    alone.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(burned.get_weights(), alone.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The third step mimics: the cohorts part.
    burned.fit(x[:16], y[:16], batch_size=16, epochs=1, shuffle=False, verbose=0)
    alone.fit(x[:16], y[:16], batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert any(
        not np.allclose(a, b, atol=1e-7)
        for a, b in zip(burned.get_weights(), alone.get_weights())
    )


def test_a_ramped_cohort_logs_the_ramped_loss_and_round_trips(tmp_path):
    x, y = data(32)
    model = _cohort(kl_ramp_up_steps=100, kl_ramp_shape="linear")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    logs = model.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    # At step 2 of 100 the KL weighs 0.02: loss = ce + 0.02 * kl per peer.
    expected = sum(logs[f"peer{k}_ce"] + 0.02 * logs[f"peer{k}_kl"] for k in range(2))
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    model.save(tmp_path / "c.keras")
    loaded = keras.saving.load_model(tmp_path / "c.keras")
    assert (loaded.kl_ramp_up_steps, loaded.kl_ramp_shape) == (100, "linear")
    assert int(loaded.optimizer.iterations) == 2  # The ramp resumes from here.


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kl_ramp_up_steps": -1}, "kl_ramp_up_steps"),
        ({"kl_burn_in_steps": 1.5}, "kl_burn_in_steps"),
        ({"kl_ramp_shape": "cosine"}, "kl_ramp_shape"),
    ],
)
def test_bad_ramps_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_dml.MutualLearningModel([dense_peer(1), dense_peer(3)], **kwargs)
