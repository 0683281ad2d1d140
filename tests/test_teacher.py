"""Offline distillation from a static teacher (`MutualLearningModel(teacher=)`):
frozen in inference mode, not a peer, Hinton et al.'s loss with one student,
DML plus a teacher with several, saved with the cohort. A core file: it runs
on every backend (tests/test_backends.py)."""

import keras
import numpy as np
import pytest

import keras_dml
from keras_dml import losses
from tests.helpers import NUM_CLASSES, assert_weights_close, data, dense_peer


def _teacher():
    teacher = dense_peer(50, batchnorm=True, name="teacher")
    # Moved BatchNorm statistics: a pre-trained teacher's, which a forward
    # pass in training mode would change.
    for variable in teacher.non_trainable_variables:
        variable.assign(np.full(variable.shape, 0.5, "float32"))
    return teacher


def _values(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _kl(p, q):
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


@pytest.mark.parametrize("update", ["simultaneous", "sequential"])
def test_the_teacher_is_frozen_and_not_a_peer(update):
    teacher = _teacher()
    before = _values(teacher)
    model = keras_dml.MutualLearningModel(
        [dense_peer(0, batchnorm=True), dense_peer(10)], teacher=teacher, update=update
    )
    model.compile(optimizer="sgd", metrics=["accuracy"])
    x, y = data(32)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    # Bitwise: weights and BatchNorm statistics.
    for a, b in zip(before, _values(teacher)):
        np.testing.assert_array_equal(a, b)
    assert len(model.peers) == 2 and len(model.peer_optimizers) == 2
    assert not any("teacher" in v.path for v in model.trainable_variables)
    assert sorted(history.history) == sorted(
        ["loss", "ensemble_accuracy", "agreement"]
        + [
            f"peer{i}_{t}"
            for i in range(2)
            for t in ("loss", "ce", "kl", "entropy", "accuracy")
        ]
    )
    assert len(model.predict(x, verbose=0)) == 2  # The peers' logits only.


def test_with_kl_weight_0_a_student_trains_exactly_as_alone():
    x, y = data(32)
    student = dense_peer(3, batchnorm=True)
    model = keras_dml.MutualLearningModel([student], teacher=_teacher(), kl_weight=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    alone = dense_peer(3, batchnorm=True)
    alone.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    alone.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    assert_weights_close(student.weights, alone.weights, atol=1e-5)


def test_one_student_is_hintons_knowledge_distillation():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 6, NUM_CLASSES)).astype("float32") * 3
    labels = rng.integers(0, NUM_CLASSES, size=6)
    temperature, weight = 4.0, 0.7
    (terms,) = losses.mutual_learning_terms(
        labels,
        [student],
        kl_weight=weight,
        temperature=temperature,
        fixed_teacher_logits=[teacher],
    )
    ce = -np.log(_softmax(student)[np.arange(6), labels]).mean()
    kl = _kl(_softmax(teacher / temperature), _softmax(student / temperature)).mean()
    np.testing.assert_allclose(float(terms.ce), ce, rtol=1e-5)
    np.testing.assert_allclose(float(terms.kl), kl, rtol=1e-5)
    np.testing.assert_allclose(
        float(terms.loss), ce + weight * temperature**2 * kl, rtol=1e-5
    )


def test_with_peers_the_teacher_is_one_more_member_each_peer_mimics():
    rng = np.random.default_rng(1)
    a, b, t = rng.normal(size=(3, 5, NUM_CLASSES)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=5)
    terms = losses.mutual_learning_terms(labels, [a, b], fixed_teacher_logits=[t])
    p = [_softmax(z) for z in (a, b, t)]
    for k, own in enumerate(p[:2]):
        others = [q for j, q in enumerate(p) if j != k]
        expected = np.mean([_kl(q, own).mean() for q in others])
        np.testing.assert_allclose(float(terms[k].kl), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="1 peer and a fixed teacher"):
        losses.mutual_learning_terms(labels, [a])


def test_a_cohort_with_a_teacher_saves_and_loads(tmp_path):
    teacher = _teacher()
    model = keras_dml.MutualLearningModel([dense_peer(1)], teacher=teacher)
    model.compile(optimizer="adam")
    x, y = data(16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "kd.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.teacher is not None and loaded.teacher.name == "teacher"
    assert not loaded.teacher.trainable and len(loaded.peers) == 1
    assert_weights_close(loaded.teacher.weights, teacher.weights, atol=0)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0)[0], model.predict(x, verbose=0)[0], atol=1e-5
    )
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)  # Trains on after loading.


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "is also a peer"),
        (lambda p: "teacher.keras", "pre-trained Keras model"),
        (
            lambda p: keras.Sequential([keras.layers.Dense(NUM_CLASSES)]),
            "is not built",
        ),
        (
            lambda p: keras.Sequential(
                [
                    keras.Input((p.input_shape[-1],)),
                    keras.layers.Dense(NUM_CLASSES, activation="softmax"),
                ]
            ),
            "ends in a softmax",
        ),
        (
            lambda p: dense_peer(7, num_classes=NUM_CLASSES + 1),
            "same number of classes",
        ),
    ],
    ids=["peer", "path", "unbuilt", "softmax", "classes"],
)
def test_a_bad_teacher_is_named(make, message):
    peer = dense_peer(0)
    with pytest.raises(ValueError, match=message):
        keras_dml.MutualLearningModel([peer], teacher=make(peer))
    with pytest.raises(ValueError, match="1 student and a `teacher`"):
        keras_dml.MutualLearningModel([dense_peer(1)])
