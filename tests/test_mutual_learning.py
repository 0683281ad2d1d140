"""MutualLearningModel: construction, compile, the two update orders, logs."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dml
from keras_dml import losses
from keras_dml.callbacks import EvaluateOnAverages
from keras_dml.cohort.keras_internals import moving_averages
from keras_dml.cohort.peer_optimizers import averaging_optimizer
from tests.helpers import (
    NUM_CLASSES,
    assert_weights_close,
    batches,
    data,
    dense_peer,
)


def cohort(num_peers=2, **kwargs):
    peers = [dense_peer(10 * i) for i in range(num_peers)]
    return keras_dml.MutualLearningModel(peers, **kwargs)


# ------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "make_peers,kwargs,message",
    [
        (lambda: [dense_peer(0)], {}, "at least 2 peers"),
        (lambda: [], {}, "at least 2 peers"),
        (
            lambda: [dense_peer(0), dense_peer(1, num_classes=5)],
            {},
            "same number of classes",
        ),
        (lambda: [dense_peer(0)] * 2, {}, "appears twice"),
        (lambda: [dense_peer(0), dense_peer(1)], {"kl_weight": -0.5}, "kl_weight=-0.5"),
        (lambda: [dense_peer(0), dense_peer(1)], {"temperature": 0}, "temperature=0"),
        (
            lambda: [dense_peer(0), dense_peer(1)],
            {"temperature": -2.0},
            "temperature=-2.0",
        ),
        (lambda: [dense_peer(0), dense_peer(1)], {"mimicry": "avg"}, "mimicry='avg'"),
        (lambda: [dense_peer(0), dense_peer(1)], {"update": "async"}, "update='async'"),
        (
            lambda: [dense_peer(0), dense_peer(1)],
            {"aux_loss_weight": -1},
            "aux_loss_weight=-1",
        ),
        (lambda: dense_peer(0), {}, "must be a list"),
        (lambda: [dense_peer(0), "resnet32"], {}, "index 1"),
    ],
)
def test_bad_construction_raises(make_peers, kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_dml.MutualLearningModel(make_peers(), **kwargs)


def test_peers_sharing_weights_are_rejected():
    shared = keras.layers.Dense(NUM_CLASSES)
    a, b = keras.Input((3,)), keras.Input((3,))
    peer_a = keras.Model(a, shared(a), name="a")
    peer_b = keras.Model(b, shared(keras.layers.Dense(3)(b)), name="b")
    with pytest.raises(ValueError, match="share the variable"):
        keras_dml.MutualLearningModel([peer_a, peer_b])


def test_multi_output_peer_is_rejected():
    inputs = keras.Input((3,))
    two = keras.Model(
        inputs, [keras.layers.Dense(4)(inputs), keras.layers.Dense(4)(inputs)]
    )
    with pytest.raises(ValueError, match="2 outputs"):
        keras_dml.MutualLearningModel([two, dense_peer(0)])


# ------------------------------------------------------------------ compile


def test_single_optimizer_is_cloned_per_peer():
    model = cohort(3)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9))
    optimizers = model.peer_optimizers
    assert len({id(o) for o in optimizers}) == 3
    assert len({o.name for o in optimizers}) == 3
    for opt, peer in zip(optimizers, model.peers):
        assert opt.built
        assert {id(v) for v in opt._trainable_variables} == {
            id(v) for v in peer.trainable_variables
        }
        assert float(opt.learning_rate) == pytest.approx(0.05)
    assert model.optimizer.optimizers is optimizers


def test_bad_compile_inputs_raise():
    model = cohort(2)
    with pytest.raises(ValueError, match="list of 3 optimizers"):
        model.compile(optimizer=["sgd", "sgd", "sgd"])
    shared = keras.optimizers.SGD()
    with pytest.raises(ValueError, match="own optimizer"):
        model.compile(optimizer=[shared, shared])
    with pytest.raises(ValueError, match="loss"):
        model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="`metrics` has duplicate names"):
        model.compile(optimizer="sgd", metrics=["accuracy", "accuracy"])
    with pytest.raises(ValueError, match="after `compile"):
        cohort(2).peer_optimizers  # noqa: B018


def test_optimizer_built_for_another_model_is_rejected():
    other = dense_peer(99)
    opt = keras.optimizers.SGD()
    opt.build(other.trainable_variables)
    with pytest.raises(ValueError, match="already built"):
        cohort(2).compile(optimizer=[opt, keras.optimizers.SGD()])


def test_logs_have_every_documented_key():
    x, y = data(32, unlabeled=4)
    model = cohort(3)
    model.compile(
        "sgd", metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=2)]
    )
    history = model.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), verbose=0)
    names = [
        "loss",
        "ensemble_accuracy",
        "ensemble_sparse_top_k_categorical_accuracy",
        "agreement",
    ]
    for i in range(3):
        names += [f"peer{i}_{n}" for n in ("loss", "ce", "kl", "entropy", "accuracy")]
        names.append(f"peer{i}_sparse_top_k_categorical_accuracy")
    assert set(history.history) == set(names) | {f"val_{n}" for n in names}
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == set(names)
    logs = history.history
    assert logs["loss"][0] == pytest.approx(
        sum(logs[f"peer{i}_loss"][0] for i in range(3))
    )


def test_evaluate_reports_loss_terms_and_metrics_on_known_predictions():
    """With zero weights every peer predicts uniformly: CE = log C, KL = 0."""
    model = cohort(2)
    for v in model.trainable_variables:
        v.assign(np.zeros(v.shape, "float32"))
    model.compile("sgd", metrics=["accuracy"])
    x, y = data(16)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["peer0_ce"] == pytest.approx(np.log(NUM_CLASSES), rel=1e-5)
    assert logs["peer1_kl"] == pytest.approx(0.0, abs=1e-6)
    # argmax of a uniform row is class 0.
    assert logs["ensemble_accuracy"] == pytest.approx(np.mean(y == 0))


def test_a_from_logits_metric_sees_logits_and_agrees_with_the_default():
    # As a plain-Keras user compiles a logits model; the default
    # "crossentropy" reads probabilities. Both must be the peers' CE.
    model = cohort(2)
    model.compile(
        "sgd",
        metrics=[
            keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="xent"),
            "crossentropy",
        ],
    )
    x, y = data(16)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    for i in range(2):
        assert logs[f"peer{i}_xent"] == pytest.approx(logs[f"peer{i}_ce"], rel=1e-5)
        assert logs[f"peer{i}_crossentropy"] == pytest.approx(
            logs[f"peer{i}_ce"], rel=1e-5
        )
    # The ensemble: the CE of the mean probabilities, read either way.
    probabilities = [
        keras.ops.convert_to_numpy(keras.ops.softmax(z))
        for z in model.predict(x, verbose=0)
    ]
    mean = sum(probabilities) / 2
    expected = -np.mean(np.log(mean[np.arange(len(y)), y]))
    assert logs["ensemble_xent"] == pytest.approx(expected, rel=1e-5)
    assert logs["ensemble_crossentropy"] == pytest.approx(expected, rel=1e-5)


def test_entropy_and_agreement_on_known_predictions():
    model = cohort(3)
    model.compile("sgd")
    x, y = data(16, unlabeled=5)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    logits = [np.asarray(z, "float64") for z in model.predict(x, verbose=0)]
    for i, z in enumerate(logits):
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        entropy = -np.sum(p * np.log(p), -1).mean()  # Unlabeled examples too.
        assert logs[f"peer{i}_entropy"] == pytest.approx(entropy, rel=1e-4)
    top1 = [z.argmax(-1) for z in logits]
    pairs = [(0, 1), (0, 2), (1, 2)]
    agreement = np.mean([np.mean(top1[a] == top1[b]) for a, b in pairs])
    assert logs["agreement"] == pytest.approx(agreement, rel=1e-6)
    # A peer with zero weights predicts uniformly: the largest entropy.
    for v in model.peers[0].trainable_variables:
        v.assign(np.zeros(v.shape, "float32"))
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["peer0_entropy"] == pytest.approx(np.log(NUM_CLASSES), rel=1e-5)


def test_predict_returns_each_peers_logits():
    model = cohort(2)
    model.compile("sgd")
    x, _ = data(10)
    out = model.predict(x, verbose=0)
    assert len(out) == 2
    np.testing.assert_allclose(
        out[1], keras.ops.convert_to_numpy(model.peers[1](x)), rtol=1e-5, atol=1e-6
    )


# ------------------------------------------------------- what a step moves


def _manual_sgd_step(peer, loss_fn, lr):
    with tf.GradientTape() as tape:
        loss = loss_fn()
    grads = tape.gradient(loss, peer.trainable_variables)
    return [v.numpy() - lr * g.numpy() for v, g in zip(peer.trainable_variables, grads)]


@pytest.mark.tensorflow_only  # its reference step is a tf.GradientTape
def test_one_simultaneous_step_equals_each_peers_own_gradient_step():
    x, y = data(16, unlabeled=3)
    model = cohort(3, kl_weight=0.8, temperature=2.0)
    lr = 0.3
    expected = []
    logits = [p(x, training=True) for p in model.peers]
    for k, peer in enumerate(model.peers):

        def loss_k(k=k, peer=peer):
            zs = [peer(x, training=True) if j == k else logits[j] for j in range(3)]
            return losses.mutual_learning_losses(y, zs, kl_weight=0.8, temperature=2.0)[
                k
            ]

        expected.append(_manual_sgd_step(peer, loss_k, lr))
    model.compile(keras.optimizers.SGD(lr))
    model.train_on_batch(x, y)
    for peer, want in zip(model.peers, expected):
        assert_weights_close(peer.get_weights(), want)


def test_a_step_moves_only_the_peers_whose_optimizers_move():
    x, y = data(16)
    model = cohort(2)
    before = [p.get_weights() for p in model.peers]
    model.compile([keras.optimizers.SGD(0.5), keras.optimizers.SGD(0.0)])
    model.train_on_batch(x, y)
    assert all(
        not np.allclose(a, b) for a, b in zip(before[0], model.peers[0].get_weights())
    )
    assert_weights_close(before[1], model.peers[1].get_weights(), rtol=0, atol=0)


def test_kl_weight_zero_is_independent_training():
    x, y = data(48, seed=3)
    peers = [dense_peer(1, batchnorm=True), dense_peer(2, batchnorm=True)]
    alone = [keras.models.clone_model(p) for p in peers]
    for a, p in zip(alone, peers):
        a.set_weights(p.get_weights())
    model = keras_dml.MutualLearningModel(peers, kl_weight=0.0)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    for peer, single in zip(peers, alone):
        single.compile(
            keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        single.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
        assert_weights_close(peer.get_weights(), single.get_weights())


def _reference_algorithm1(peers, steps, lr, kl_weight):
    """The paper's Algorithm 1, written plainly: before each peer's update,
    recompute every peer's predictions with the current weights."""
    for x, y in steps:
        for k, peer in enumerate(peers):
            current = [p(x, training=True) for p in peers]

            def loss_k(k=k, peer=peer, current=current, x=x, y=y):
                zs = list(current)
                zs[k] = peer(x, training=True)
                return losses.mutual_learning_losses(y, zs, kl_weight=kl_weight)[k]

            new = _manual_sgd_step(peer, loss_k, lr)
            for v, value in zip(peer.trainable_variables, new):
                v.assign(value)


@pytest.mark.tensorflow_only  # its reference step is a tf.GradientTape
@pytest.mark.parametrize("num_peers", [2, 3])
def test_sequential_update_matches_algorithm_1(num_peers):
    x, y = data(24, seed=5, unlabeled=2)
    steps = batches(x, y, 8)
    peers = [dense_peer(7 * i + 1) for i in range(num_peers)]
    reference = [keras.models.clone_model(p) for p in peers]
    for r, p in zip(reference, peers):
        r.set_weights(p.get_weights())
    simultaneous = [keras.models.clone_model(p) for p in peers]
    for s, p in zip(simultaneous, peers):
        s.set_weights(p.get_weights())

    model = keras_dml.MutualLearningModel(peers, update="sequential", kl_weight=2.0)
    model.compile(keras.optimizers.SGD(0.5))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    _reference_algorithm1(reference, steps, lr=0.5, kl_weight=2.0)
    for peer, ref in zip(peers, reference):
        assert_weights_close(peer.get_weights(), ref.get_weights())

    other = keras_dml.MutualLearningModel(simultaneous, kl_weight=2.0)
    other.compile(keras.optimizers.SGD(0.5))
    other.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    # The last peer sees updated targets only in sequential mode.
    assert not np.allclose(
        simultaneous[-1].get_weights()[0], peers[-1].get_weights()[0]
    )


def test_sequential_recompute_leaves_batchnorm_statistics_updated_once():
    x, y = data(8)
    peers = [dense_peer(1, batchnorm=True), dense_peer(2, batchnorm=True)]
    twins = [keras.models.clone_model(p) for p in peers]
    for t, p in zip(twins, peers):
        t.set_weights(p.get_weights())
    seq = keras_dml.MutualLearningModel(peers, update="sequential")
    seq.compile(keras.optimizers.SGD(0.1))
    seq.train_on_batch(x, y)
    for peer, twin in zip(peers, twins):
        twin(x, training=True)  # one training-mode pass on the same batch
        moving = [v for v in peer.non_trainable_variables]
        expected = [v for v in twin.non_trainable_variables]
        assert_weights_close([v.numpy() for v in moving], [v.numpy() for v in expected])


class _CountingPeer(keras.Model):
    """A peer that counts its forward passes."""

    def __init__(self, inner, **kwargs):
        super().__init__(name=inner.name, **kwargs)
        self.inner = inner
        self.calls = 0

    def call(self, x, training=False):
        self.calls += 1
        return self.inner(x, training=training)


@pytest.mark.parametrize("update, passes", [("simultaneous", 3), ("sequential", 5)])
def test_a_step_makes_k_or_2k_minus_1_forward_passes(update, passes):
    """K for the simultaneous order; 2K - 1 for Algorithm 1 on every backend:
    each peer's pass is recorded once, and a peer's predictions are computed
    again only after its update, for the peers after it."""
    x, y = data(8)
    peers = [_CountingPeer(dense_peer(i + 1)) for i in range(3)]
    model = keras_dml.MutualLearningModel(peers, update=update)
    model.compile(keras.optimizers.SGD(0.1), run_eagerly=True)  # Python counts.
    model.train_on_batch(x, y)  # Builds the peers.
    for peer in peers:
        peer.calls = 0
    model.train_on_batch(x, y)
    assert sum(peer.calls for peer in peers) == passes


def test_unlabeled_batch_trains_through_mimicry_only():
    x, _ = data(8)
    y = np.full(8, -1, "int32")
    model = cohort(2)
    before = model.peers[0].get_weights()
    model.compile(keras.optimizers.SGD(0.5))
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["peer0_ce"] == 0.0
    assert logs["peer0_kl"] > 0
    assert not np.allclose(before[0], model.peers[0].get_weights()[0])


def test_regularization_and_auxiliary_losses_count():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(5, kernel_regularizer=keras.regularizers.L2(0.1))(inputs)
    outputs = {
        "logits": keras.layers.Dense(NUM_CLASSES)(h),
        "aux_logits": [keras.layers.Dense(NUM_CLASSES)(h)],
    }
    aux_peer = keras.Model(inputs, outputs)
    model = keras_dml.MutualLearningModel(
        [aux_peer, dense_peer(3)], aux_loss_weight=0.5
    )
    model.compile(keras.optimizers.SGD(0.1))
    x, y = data(8)
    regularization = float(sum(aux_peer.losses))
    assert regularization > 0
    out = aux_peer(x)
    aux_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        y, out["aux_logits"][0]
    )

    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    # Evaluation: regularization counts, auxiliary classifiers do not.
    assert logs["peer0_loss"] == pytest.approx(
        logs["peer0_ce"] + logs["peer0_kl"] + regularization, rel=1e-5
    )
    train_logs = model.train_on_batch(x, y, return_dict=True)
    assert train_logs["peer0_loss"] == pytest.approx(
        logs["peer0_ce"] + logs["peer0_kl"] + regularization + 0.5 * float(aux_ce),
        rel=1e-5,
    )
    assert train_logs["peer1_loss"] == pytest.approx(logs["peer1_loss"], rel=1e-5)


class SubclassedPeer(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.out = keras.layers.Dense(NUM_CLASSES)

    def call(self, x):
        return self.out(self.hidden(x))


@pytest.mark.parametrize(
    "update,mimicry",
    [
        ("simultaneous", "pairwise"),
        ("sequential", "pairwise"),
        # Copies of peers that have no weights until their first call.
        ("simultaneous", "temporal_mean"),
    ],
)
def test_unbuilt_subclassed_peers_build_on_first_step(update, mimicry):
    peers = [SubclassedPeer(), SubclassedPeer()]
    model = keras_dml.MutualLearningModel(peers, update=update, mimicry=mimicry)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9))
    x, y = data(16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # The cohort builds them as Keras would, by a call: no warning that
    # build() was called on a layer without one (JAX and PyTorch printed it).
    assert not [w for w in caught if "build()" in str(w.message)]
    if mimicry == "temporal_mean":
        assert len(model.mimicry.weights) == 8
    for opt, peer in zip(model.peer_optimizers, peers):
        assert len(peer.trainable_variables) == 4
        assert int(opt.iterations) == 2
        assert {id(v) for v in opt._trainable_variables} == {
            id(v) for v in peer.trainable_variables
        }


# ------------------------------------------------------------ LR handling


def test_learning_rate_scheduler_sets_every_peers_rate():
    x, y = data(16)
    model = cohort(2)
    model.compile([keras.optimizers.SGD(0.1), keras.optimizers.Adam(0.01)])
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[schedule], verbose=0)
    rates = [float(o.learning_rate) for o in model.peer_optimizers]
    np.testing.assert_allclose(rates, [0.025, 0.0025], rtol=1e-6)
    with pytest.raises(AttributeError, match="learning rates differ"):
        model.optimizer.learning_rate  # noqa: B018
    model.optimizer.learning_rate = 0.2
    assert float(model.optimizer.learning_rate) == pytest.approx(0.2)


def test_reduce_lr_on_plateau_reduces_every_peer():
    x, y = data(16)
    model = cohort(2)
    model.compile(keras.optimizers.SGD(0.0))  # no progress: a plateau
    reduce = keras.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=0.5, patience=0, min_delta=1.0
    )
    model.optimizer.learning_rate = 0.1
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[reduce], verbose=0)
    rates = [float(o.learning_rate) for o in model.peer_optimizers]
    np.testing.assert_allclose(rates, [0.05, 0.05], rtol=1e-6)


def test_learning_rate_schedules_run_per_peer():
    x, y = data(16)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.1, 0.01])
    model = cohort(2)
    model.compile(keras.optimizers.SGD(schedule))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for opt in model.peer_optimizers:
        assert int(opt.iterations) == 4
        assert float(opt.learning_rate) == pytest.approx(0.01)
    assert int(model.optimizer.iterations) == 4


# ----------------------------------------------------------- mixed precision


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains(policy):
    keras.mixed_precision.set_global_policy(policy)
    x, y = data(64, seed=9)
    model = cohort(2)
    model.compile(keras.optimizers.SGD(0.2, momentum=0.9))
    is_scaled = [
        isinstance(o, keras.optimizers.LossScaleOptimizer)
        for o in model.peer_optimizers
    ]
    assert is_scaled == [policy == "mixed_float16"] * 2
    first = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0)
    assert all(np.isfinite(v) for v in history.history["loss"])
    assert model.evaluate(x, y, verbose=0, return_dict=True)["loss"] < first


# ------------------------------------------------- moving averages of weights


def _averaging_fit(callbacks):
    x, y = data(64, seed=3)
    model = cohort(2)
    model.compile(
        keras.optimizers.SGD(0.2, momentum=0.9, use_ema=True, ema_momentum=0.5)
    )
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        validation_data=(x, y),
        callbacks=callbacks,
        shuffle=False,  # The same batches in every call.
        verbose=0,
    )
    return model, history.history, model.evaluate(x, y, verbose=0, return_dict=True)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_validation_sees_the_moving_averages_the_fit_ends_with(policy):
    """`use_ema=True` per peer optimizer (a float16 peer's inside its
    LossScaleOptimizer): EvaluateOnAverages validates the averages, and the
    fit ends with them in the peers."""
    keras.mixed_precision.set_global_policy(policy)
    model, history, final = _averaging_fit([EvaluateOnAverages()])
    assert model.optimizer.averages_weights
    for name in ("loss", "peer0_ce", "peer1_loss"):
        assert history[f"val_{name}"][-1] == pytest.approx(final[name], rel=1e-5)
    for opt in model.peer_optimizers:
        for variable, average in moving_averages(averaging_optimizer(opt)):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(variable),
                keras.ops.convert_to_numpy(average),
            )
    # Without it, validation sees the trained weights, which the averages are not.
    _, unswapped, _ = _averaging_fit([])
    assert unswapped["val_loss"][-1] != pytest.approx(final["loss"], rel=1e-5)
    assert unswapped["loss"] == pytest.approx(history["loss"], rel=1e-5)


# ---------------------------------------------------- sample and class weights


def _weights_of(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def test_sample_weight_multiplies_each_examples_terms():
    x, y = data(16, unlabeled=4)
    weights = np.random.default_rng(2).uniform(0.0, 2.0, 16).astype("float32")
    model = cohort(2, kl_weight=0.7, temperature=2.0)
    model.compile("sgd")
    logs = model.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    logits = [np.asarray(z, "float64") for z in model.predict(x, verbose=0)]
    log_p = [z - np.log(np.exp(z).sum(-1, keepdims=True)) for z in logits]
    labeled = y >= 0
    for k in range(2):
        # CE: weighted sum over labeled examples / their (unweighted) count.
        nll = -log_p[k][labeled, y[labeled]]
        ce = np.sum(weights[labeled] * nll) / labeled.sum()
        assert logs[f"peer{k}_ce"] == pytest.approx(ce, rel=1e-4)
        # KL at temperature 2 to the other peer: weighted sum / batch size.
        t = [z / 2.0 - np.log(np.exp(z / 2.0).sum(-1, keepdims=True)) for z in logits]
        kl = np.sum(np.exp(t[1 - k]) * (t[1 - k] - t[k]), -1)
        assert logs[f"peer{k}_kl"] == pytest.approx(np.mean(weights * kl), rel=1e-4)
    unweighted = model.evaluate(x, y, verbose=0, return_dict=True)
    ones = model.evaluate(x, y, sample_weight=np.ones(16), verbose=0, return_dict=True)
    assert ones["loss"] == pytest.approx(unweighted["loss"], rel=1e-6)


def test_class_weight_equals_the_sample_weights_of_the_labels():
    x, y = data(32, unlabeled=5)
    class_weight = {0: 0.25, 2: 3.0}  # Classes not named weigh 1.
    per_example = np.array(
        [class_weight.get(int(label), 1.0) if label >= 0 else 1.0 for label in y],
        "float32",
    )
    runs = []
    for given in ({"class_weight": class_weight}, {"sample_weight": per_example}):
        model = cohort(2)
        model.compile(keras.optimizers.SGD(0.1))
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, **given)
        runs.append(_weights_of(model))
    assert_weights_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)


def test_class_weight_applies_to_the_fit_it_is_given_to():
    x, y = data(32)
    model = cohort(2, kl_weight=0.0)
    model.compile(keras.optimizers.SGD(0.1))
    before = _weights_of(model)
    zero = {c: 0.0 for c in range(NUM_CLASSES)}
    model.fit(x, y, batch_size=8, epochs=1, class_weight=zero, verbose=0)
    assert_weights_close(_weights_of(model), before, rtol=0, atol=0)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # Unweighted again.
    assert not np.allclose(_weights_of(model)[0], before[0])


@pytest.mark.parametrize(
    "class_weight,message",
    [
        ({-1: 2.0}, "class ids"),
        ({0: float("nan")}, "finite weights"),
        ({"cat": 1.0}, "class ids"),
        ([1.0, 2.0], "non-empty dict"),
        ({NUM_CLASSES: 2.0}, f"names class {NUM_CLASSES}, but the peers have"),
    ],
)
def test_bad_class_weights_are_named(class_weight, message):
    x, y = data(8)
    model = cohort(2)
    model.compile("sgd")
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, class_weight=class_weight, verbose=0)
    with pytest.raises(ValueError, match="at the same time"):
        model.fit(x, y, class_weight={0: 1.0}, sample_weight=np.ones(8), verbose=0)


def test_kl_reduction_sum_is_the_official_codes_and_round_trips(tmp_path):
    x, y = data(16)
    peers = [dense_peer(10 * i) for i in range(3)]
    logs = {}
    for reduction in ("mean", "sum"):
        model = keras_dml.MutualLearningModel(peers, kl_reduction=reduction)
        model.compile("sgd")
        logs[reduction] = model.evaluate(x, y, verbose=0, return_dict=True)
    for k in range(3):  # Two other peers: their sum is twice their mean.
        assert logs["sum"][f"peer{k}_kl"] == pytest.approx(
            2 * logs["mean"][f"peer{k}_kl"], rel=1e-5
        )
    model.save(tmp_path / "c.keras")
    assert keras.saving.load_model(tmp_path / "c.keras").kl_reduction == "sum"
    with pytest.raises(ValueError, match="kl_reduction='none'"):
        keras_dml.MutualLearningModel(peers, kl_reduction="none")


def test_as_functional_shares_the_peers_and_gives_their_logits():
    model = cohort(2)
    view = model.as_functional()
    # Keras's plot_model and summary see a graph of the peers.
    assert [layer for layer in view.layers if layer in model.peers] == model.peers
    x, _ = data(4)
    got = view(x)
    for peer, logits in zip(model.peers, model(x)):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(got[peer.name]),
            keras.ops.convert_to_numpy(logits),
            rtol=1e-6,
        )


def _twin_cohort(peer_distortion, **kwargs):
    """Two peers with the same initial weights: they differ only by what
    they see."""
    peers = [dense_peer(1, name="twin_a"), dense_peer(1, name="twin_b")]
    return keras_dml.MutualLearningModel(
        peers, peer_distortion=peer_distortion, **kwargs
    )


def test_peer_distortion_gives_each_peer_its_own_view_in_training_only():
    x, y = data(16, seed=21)
    noise = keras.layers.GaussianNoise(0.5, seed=3)
    model = _twin_cohort(noise)
    model.compile(keras.optimizers.SGD(0.0))
    logs = model.train_on_batch(x, y, return_dict=True)
    # Twins on one view agree exactly (KL 0); on their own views they differ.
    assert logs["peer0_kl"] > 1e-4 and logs["peer1_kl"] > 1e-4
    assert logs["peer0_ce"] != logs["peer1_ce"]
    evaluated = model.evaluate(x, y, return_dict=True, verbose=0)
    assert evaluated["peer0_kl"] == pytest.approx(0.0, abs=1e-7)
    assert evaluated["peer0_ce"] == pytest.approx(evaluated["peer1_ce"], rel=1e-6)
    plain = _twin_cohort(None)
    plain.compile(keras.optimizers.SGD(0.0))
    assert plain.train_on_batch(x, y, return_dict=True)["peer0_kl"] == pytest.approx(
        0.0, abs=1e-7
    )


def test_peer_distortion_is_saved_with_its_random_state_and_resumes_exactly(tmp_path):
    x, y = data(32, seed=22)
    model = _twin_cohort(keras.layers.GaussianNoise(0.3, seed=4), mimicry="kdcl")
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "distorted.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.peer_distortion, keras.layers.GaussianNoise)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert_weights_close(loaded.get_weights(), model.get_weights())


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"peer_distortion": "flip"}, "must be a Keras layer"),
        ({"update": "sequential"}, "update='sequential' recomputes"),
        ({"mimicry": "temporal_mean"}, "runs copies of the peers"),
    ],
)
def test_peer_distortion_is_refused_where_a_view_is_not_defined(kwargs, message):
    kwargs = {"peer_distortion": keras.layers.GaussianNoise(0.1), **kwargs}
    with pytest.raises(ValueError, match=message):
        _twin_cohort(**kwargs)
