"""Bad labels in fit, evaluate and train_on_batch: a ValueError that says what
was received and what is expected, raised from the compiled step."""

import keras
import numpy as np
import pytest

import keras_dml
from tests.helpers import NUM_CLASSES, data, dense_peer

EXPECTED = (
    rf"labels must be integer class ids in \[0, {NUM_CLASSES}\) or -1 for unlabeled"
)


def _cohort(update="simultaneous"):
    model = keras_dml.MutualLearningModel([dense_peer(1), dense_peer(3)], update=update)
    model.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
    return model


def _bad_labels():
    _, y = data(32)
    too_large = y.copy()
    too_large[6] = 150
    fraction = y.astype("float32")
    fraction[3] = 1.5
    return {
        "too_large": (too_large, f"{EXPECTED}; received 150$"),
        "one_hot": (
            keras.utils.to_categorical(y, NUM_CLASSES),
            rf"{EXPECTED}, one per example .*"
            r"received labels of shape \[\d+, 4\] \(one-hot",
        ),
        "matrix": (np.stack([y, y], axis=1), r"received labels of shape \[\d+, 2\]"),
        "fraction": (fraction, f"{EXPECTED}; received 1.5$"),
        "nan": (np.full(32, np.nan, "float32"), f"{EXPECTED}; received nan$"),
    }


@pytest.mark.parametrize("case", sorted(_bad_labels()))
@pytest.mark.parametrize("update", ["simultaneous", "sequential"])
def test_fit_refuses_bad_labels(case, update):
    labels, message = _bad_labels()[case]
    x, _ = data(32)
    with pytest.raises(ValueError, match=message):
        _cohort(update).fit(x, labels, batch_size=16, epochs=1, verbose=0)


@pytest.mark.parametrize("case", sorted(_bad_labels()))
def test_evaluate_and_train_on_batch_refuse_bad_labels(case):
    labels, message = _bad_labels()[case]
    x, _ = data(32)
    model = _cohort()
    with pytest.raises(ValueError, match=message):
        model.evaluate(x, labels, batch_size=16, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.train_on_batch(x, labels)


@pytest.mark.tensorflow_only  # In-step checks: TensorFlow's graph assertions.
def test_a_dataset_with_a_bad_label_fails_at_that_batch():
    import tensorflow as tf

    x, y = data(32)
    y[20] = NUM_CLASSES
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match=f"{EXPECTED}; received {NUM_CLASSES}$"):
        _cohort().fit(dataset, epochs=1, verbose=0)


def test_good_labels_of_every_accepted_form_train_alike():
    x, y = data(32, unlabeled=5)
    results = []
    for labels in (y, y.reshape(-1, 1), y.astype("float32"), y.astype("int64")):
        keras.utils.set_random_seed(0)
        model = _cohort()
        model.fit(x, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)
        results.append(model.peers[0].get_weights())
    for weights in results[1:]:
        for a, b in zip(results[0], weights):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_string_labels_are_refused():
    x, y = data(8)
    with pytest.raises(ValueError, match=f"{EXPECTED}; received string labels"):
        _cohort().train_on_batch(x, y.astype(str))


@pytest.mark.parametrize("case", ["too_large", "fraction", "nan"])
def test_array_labels_are_checked_before_the_first_step_and_the_model_stays_usable(
    case,
):
    # On JAX an error inside a step leaves Keras's trainer holding the model's
    # state (the model is unusable after it) and a label out of range trains
    # silently to NaN: NumPy labels are checked on the host, on every backend.
    labels, message = _bad_labels()[case]
    x, y = data(32)
    model = _cohort()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message):
        model.fit(x, labels, batch_size=16, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=f"validation_data: {message}"):
        model.fit(x, y, validation_data=(x, labels), batch_size=16, verbose=0)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # Still trains.
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_inputs_with_nan_or_inf_are_refused_before_training():
    x, y = data(32)
    x[5, 2] = np.nan
    x[9, 0] = np.inf
    model = _cohort()
    message = r"hold 2 NaN or infinite value\(s\) \(the first at index \(5, 2\)\)"
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_one_hot_labels_from_a_dataset_are_refused_inside_the_step():
    # Datasets are not checked on the host: the step's own check
    # (labels.check_form, at trace time) names them on every backend.
    import tensorflow as tf

    x, y = data(32)
    one_hot = keras.utils.to_categorical(y, NUM_CLASSES)
    dataset = tf.data.Dataset.from_tensor_slices((x, one_hot)).batch(8)
    with pytest.raises(ValueError, match=r"received labels of shape \[\w+, 4\] \(one"):
        _cohort().fit(dataset, epochs=1, verbose=0)


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size=8):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


def test_a_py_dataset_with_a_bad_label_fails_and_the_model_stays_usable():
    # Its batches are checked as Keras reads them (on JAX an in-step error
    # leaves the model unusable; TensorFlow checks in the graph).
    x, y = data(32)
    bad = y.copy()
    bad[20] = NUM_CLASSES
    model = _cohort()
    with pytest.raises(ValueError, match=f"{EXPECTED}; received {NUM_CLASSES}"):
        model.fit(_Batches(x, bad), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=f"{EXPECTED}; received {NUM_CLASSES}"):
        model.fit(_Batches(x, y), validation_data=_Batches(x, bad), verbose=0)
    model.fit(_Batches(x, y), epochs=1, verbose=0)  # Still trains.
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert np.isfinite(np.asarray(model.predict(x, verbose=0)[0])).all()
