"""Branch cohorts: peers that share a trunk (ONE, OKDDip, PCL's cohorts)."""

import keras
import numpy as np
import pytest

import keras_dml
from tests.helpers import NUM_CLASSES, assert_weights_close, data, dense_branches


def _cohort(num_branches=3, seed=0, **kwargs):
    trunk, branches = dense_branches(num_branches, seed, **kwargs.pop("net", {}))
    return keras_dml.MutualLearningModel(branches, trunk=trunk, **kwargs)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _reference_losses(x, y, weights, targets, kl_weight):
    """Every peer's DML loss (CE + kl_weight * pairwise-mean KL to the fixed
    `targets`), for weights [trunk kernel, trunk bias, (kernel, bias) per
    branch], in float64."""
    trunk_kernel, trunk_bias, *heads = weights
    h = np.tanh(x @ trunk_kernel + trunk_bias)
    losses = []
    for k in range(len(heads) // 2):
        z = h @ heads[2 * k] + heads[2 * k + 1]
        log_p = np.log(_softmax(z))
        ce = -np.mean(log_p[np.arange(len(y)), y])
        kls = [
            np.mean(np.sum(q * (np.log(q) - log_p), -1))
            for j, q in enumerate(targets)
            if j != k
        ]
        losses.append(ce + kl_weight * np.mean(kls))
    return losses


def _numeric_gradient(f, weights, index, eps=1e-6):
    grad = np.zeros_like(weights[index])
    for i in np.ndindex(grad.shape):
        for sign in (1, -1):
            shifted = [w.copy() for w in weights]
            shifted[index][i] += sign * eps
            grad[i] += sign * f(shifted) / (2 * eps)
    return grad


def test_the_trunk_learns_from_every_branch_and_each_branch_from_its_own_loss():
    x, y = data(16, seed=3)
    model = _cohort(3, kl_weight=0.7)
    model.compile(keras.optimizers.SGD(0.5))
    trunk_vars = model.trunk.trainable_variables
    head_vars = [v for b in model.branches for v in b.trainable_variables]
    weights = [np.float64(v.numpy()) for v in [*trunk_vars, *head_vars]]
    targets = [_softmax(np.float64(z)) for z in model.predict(x, verbose=0)]
    x64 = np.float64(x)

    def total(w):
        return sum(_reference_losses(x64, y, w, targets, 0.7))

    def own(k):
        return lambda w: _reference_losses(x64, y, w, targets, 0.7)[k]

    expected = [
        w - 0.5 * _numeric_gradient(total, weights, i)
        for i, w in enumerate(weights[:2])
    ]
    for k in range(3):
        for i in (2 + 2 * k, 3 + 2 * k):
            expected.append(weights[i] - 0.5 * _numeric_gradient(own(k), weights, i))
    logs = model.train_on_batch(x, y, return_dict=True)
    got = [v.numpy() for v in [*trunk_vars, *head_vars]]
    assert_weights_close(got, expected, rtol=1e-4, atol=1e-5)
    reference = _reference_losses(x64, y, weights, targets, 0.7)
    for k in range(3):
        np.testing.assert_allclose(logs[f"peer{k}_loss"], reference[k], rtol=1e-5)


def test_the_trunk_runs_once_per_step():
    # Its BatchNorm statistics move once per step, as in one network: run
    # once per branch they would move three times.
    x, y = data(16, seed=4)
    model = _cohort(3, net={"batchnorm": True})
    model.compile(keras.optimizers.SGD(0.0))
    dense = model.trunk.layers[1]
    batch_mean = np.mean(keras.ops.convert_to_numpy(dense(x)), axis=0)
    model.train_on_batch(x, y)
    bn = model.trunk.layers[2]
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), (1 - bn.momentum) * batch_mean, rtol=1e-5, atol=1e-6
    )


def test_each_peer_is_the_standalone_trunk_and_branch():
    x, _ = data(8, seed=5)
    model = _cohort(2)
    trunk_layer = model.peers[0].layers[1]
    assert trunk_layer is model.trunk and model.peers[1].layers[1] is model.trunk
    together = model.predict(x, verbose=0)
    for peer, logits in zip(model.peers, together):
        np.testing.assert_allclose(peer.predict(x, verbose=0), logits, rtol=1e-6)


def test_optimizers_one_per_branch_then_the_trunk():
    model = _cohort(2)
    model.compile(keras.optimizers.SGD(0.1))
    assert [o.name for o in model.optimizer.optimizers] == [
        "peer0_sgd",
        "peer1_sgd",
        "trunk_sgd",
    ]
    assert len(model.peer_optimizers) == 2
    assert model.trunk_optimizer is model.optimizer.optimizers[-1]
    with pytest.raises(ValueError, match="exactly 3: one per peer, then the trunk"):
        model.compile([keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1)])
    # Each optimizer updates its own model's variables only: a trunk with a
    # learning rate of 0 stays as it was.
    x, y = data(16, seed=6)
    model.compile([keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1), "sgd"])
    model.trunk_optimizer.learning_rate = 0.0
    before = [v.numpy() for v in model.trunk.weights]
    model.train_on_batch(x, y)
    assert_weights_close([v.numpy() for v in model.trunk.weights], before, 0, 0)


def test_saving_keeps_the_trunk_shared_and_resumes_exactly(tmp_path):
    x, y = data(32, seed=7)
    model = _cohort(3, net={"batchnorm": True})
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"])
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "cohort.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.trunk is not None and len(loaded.branches) == 3
    assert all(peer.layers[1] is loaded.trunk for peer in loaded.peers)
    assert len(loaded.optimizer.optimizers) == 4
    for a, b in zip(loaded.predict(x, verbose=0), model.predict(x, verbose=0)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert_weights_close(loaded.get_weights(), model.get_weights())


def test_the_copy_based_methods_and_a_teacher_take_a_trunk():
    x, y = data(16, seed=8)
    for mimicry in ("temporal_mean", "codistillation", "kdcl", "ensemble"):
        model = _cohort(2, mimicry=mimicry)
        model.compile("sgd")
        logs = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
        assert np.isfinite(logs["loss"][0]), mimicry


@pytest.mark.parametrize(
    "change,message",
    [
        ({"update": "sequential"}, "update='simultaneous' only"),
        ({"trunk": "shared"}, "shares the variable"),
        ({"trunk": keras.layers.Dense(3)}, "must be a Keras model"),
    ],
)
def test_a_wrong_trunk_is_refused_by_name(change, message):
    trunk, branches = dense_branches(2)
    if change.get("trunk") == "shared":
        features = keras.Input((5,))
        change = {"trunk": keras.Model(features, branches[0].layers[1](features))}
    kwargs = {"trunk": trunk, **change}
    with pytest.raises(ValueError, match=message):
        keras_dml.MutualLearningModel(branches, **kwargs)


def test_a_trunk_without_an_input_is_refused():
    _, branches = dense_branches(2)
    with pytest.raises(ValueError, match="one `keras.Input`"):
        keras_dml.MutualLearningModel(
            branches, trunk=keras.Sequential([keras.layers.Dense(5)])
        )


def test_a_branch_that_cannot_take_the_trunk_output_is_named():
    trunk, _ = dense_branches(2)
    wrong = keras.Sequential([keras.Input((7,)), keras.layers.Dense(NUM_CLASSES)])
    good = keras.Sequential([keras.Input((5,)), keras.layers.Dense(NUM_CLASSES)])
    with pytest.raises(ValueError, match="Branch 0 .* cannot take the trunk's output"):
        keras_dml.MutualLearningModel([wrong, good], trunk=trunk)


def test_resnet_cifar_branches_are_the_resnet_layer_for_layer():
    trunk, branches = keras_dml.models.resnet_cifar_branches(2, depth=8, num_classes=10)
    whole = keras_dml.models.resnet8(num_classes=10)
    shared = trunk.count_params()
    assert shared + branches[0].count_params() == whole.count_params()
    model = keras_dml.MutualLearningModel(branches, trunk=trunk)
    assert model.peers[0].output.shape == (None, 10)
    with pytest.raises(ValueError, match="branch_stages"):
        keras_dml.models.resnet_cifar_branches(2, branch_stages=4)


def _one_reference(x, y, weights, target, kl_weight):
    """ONE's trunk objective in float64: every branch's CE and KL to the
    fixed `target` (the gated ensemble's probabilities), plus the ensemble's
    CE; weights [trunk kernel, trunk bias, gate kernel, gate bias, gate BN
    gamma, beta, (kernel, bias) per branch]. The gate's BatchNorm uses the
    batch's statistics (training)."""
    trunk_kernel, trunk_bias, gate_kernel, gate_bias, gamma, beta, *heads = weights
    h = np.tanh(x @ trunk_kernel + trunk_bias)
    a = h @ gate_kernel + gate_bias
    normalized = (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-3) * gamma + beta
    gates = _softmax(np.maximum(normalized, 0.0))
    logits = [h @ heads[2 * k] + heads[2 * k + 1] for k in range(len(heads) // 2)]
    ensemble = sum(gates[:, k : k + 1] * z for k, z in enumerate(logits))
    rows = np.arange(len(y))

    def ce(z):
        return -np.mean(np.log(_softmax(z))[rows, y])

    total = ce(ensemble)
    for z in logits:
        log_p = np.log(_softmax(z))
        total += ce(z) + kl_weight * np.mean(
            np.sum(target * (np.log(target) - log_p), -1)
        )
    return total, ensemble


def test_one_trains_its_gated_ensemble_as_its_paper_and_every_branch_mimics_it():
    x, y = data(16, seed=11)
    model = _cohort(3, mimicry="one", kl_weight=0.8)
    model.compile(keras.optimizers.SGD(0.5))
    gate, norm = model.mimicry.gate, model.mimicry.gate_norm
    variables = [
        *model.trunk.trainable_variables,
        gate.kernel,
        gate.bias,
        norm.gamma,
        norm.beta,
        *[v for b in model.branches for v in b.trainable_variables],
    ]
    weights = [np.float64(v.numpy()) for v in variables]
    x64 = np.float64(x)
    _, ensemble = _one_reference(x64, y, weights, np.ones((16, NUM_CLASSES)), 0.0)
    target = _softmax(ensemble)

    def total(w):
        return _one_reference(x64, y, w, target, 0.8)[0]

    # The trunk and the gate learn from the whole objective; branch k from
    # its own loss and the ensemble's CE, which is the whole objective's
    # gradient in its weights too (the other branches' terms do not depend
    # on them).
    expected = [
        w - 0.5 * _numeric_gradient(total, weights, i) for i, w in enumerate(weights)
    ]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert_weights_close([v.numpy() for v in variables], expected, rtol=1e-4, atol=1e-5)
    assert {f"peer{k}_kl" for k in range(3)} <= set(logs)


def test_one_is_refused_without_a_trunk_and_saved_with_its_gate(tmp_path):
    with pytest.raises(ValueError, match="pass `trunk=`"):
        keras_dml.MutualLearningModel(
            [keras_dml.models.cnn_small(4) for _ in range(2)], mimicry="one"
        )
    x, y = data(32, seed=12)
    model = _cohort(2, mimicry="one")
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "one.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert_weights_close(
        loaded.mimicry.gate.get_weights(), model.mimicry.gate.get_weights(), 0, 0
    )
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert_weights_close(loaded.get_weights(), model.get_weights())


def _okddip_reference(x, y, weights, kl_weight, temperature):
    """OKDDip's objective in float64 with nothing detached, as the authors'
    `train_GL.py`: every branch's CE and T^2 * KL from its target (the
    attention-weighted auxiliary logits; the leader's, their mean);
    weights [trunk kernel, trunk bias, query, key, (hidden kernel, hidden
    bias, kernel, bias) per branch]. Returns `(total, [KL per branch])`."""
    trunk_kernel, trunk_bias, query, key, *heads = weights
    h = np.tanh(x @ trunk_kernel + trunk_bias)
    features, logits = [], []
    for k in range(len(heads) // 4):
        hidden = np.tanh(h @ heads[4 * k] + heads[4 * k + 1])
        features.append(hidden)
        logits.append(hidden @ heads[4 * k + 2] + heads[4 * k + 3])
    auxiliary = np.stack(logits[:-1], axis=1)  # [batch, A, classes]
    stacked = np.stack(features[:-1], axis=1)  # [batch, A, C]
    energy = (stacked @ query) @ np.transpose(stacked @ key, (0, 2, 1))
    attention = _softmax(energy)
    targets = list(np.transpose(attention @ auxiliary, (1, 0, 2)))
    targets.append(auxiliary.mean(axis=1))
    rows = np.arange(len(y))
    total, kls = 0.0, []
    for z, t in zip(logits, targets):
        log_p = np.log(_softmax(z / temperature))
        q = _softmax(t / temperature)
        kl = np.mean(np.sum(q * (np.log(q) - log_p), -1))
        kls.append(kl)
        ce = -np.mean(np.log(_softmax(z))[rows, y])
        total += ce + kl_weight * temperature**2 * kl
    return total, kls


def _okddip_cohort(num_branches=3, **kwargs):
    trunk, branches = dense_branches(num_branches, seed=5, hidden=4)
    mimicry = keras_dml.mimicry.OKDDip(projection_dim=2)
    return keras_dml.MutualLearningModel(
        branches, trunk=trunk, mimicry=mimicry, **kwargs
    )


def test_okddip_trains_every_weight_on_its_authors_undetached_objective():
    x, y = data(16, seed=13)
    model = _okddip_cohort(4, kl_weight=0.8, temperature=2.0)
    model.compile(keras.optimizers.SGD(0.5))
    okddip = model.mimicry
    variables = [
        *model.trunk.trainable_variables,
        okddip.query.kernel,
        okddip.key.kernel,
        *[v for b in model.branches for v in b.trainable_variables],
    ]
    weights = [np.float64(v.numpy()) for v in variables]
    x64 = np.float64(x)

    def total(w):
        return _okddip_reference(x64, y, w, 0.8, 2.0)[0]

    expected = [
        w - 0.5 * _numeric_gradient(total, weights, i) for i, w in enumerate(weights)
    ]
    # The query and key learn only through the targets: a step that
    # detached them would leave them where they are.
    assert not np.allclose(expected[2], weights[2])
    _, kls = _okddip_reference(x64, y, weights, 0.8, 2.0)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert_weights_close([v.numpy() for v in variables], expected, rtol=1e-4, atol=1e-5)
    for k in range(4):
        np.testing.assert_allclose(logs[f"peer{k}_kl"], kls[k], rtol=1e-4)


def test_okddip_attention_rows_are_distributions_over_the_auxiliary_peers():
    x, _ = data(8, seed=14)
    model = _okddip_cohort(4)
    features = model.trunk(x)
    branch_features = [reader(features)[1] for reader in model._branch_readers]
    weights = keras.ops.convert_to_numpy(model.mimicry.attention(branch_features))
    assert weights.shape == (8, 3, 3)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)


class _SubclassedBranch(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(NUM_CLASSES)

    def call(self, features):
        return self.dense(features)


def test_okddip_is_refused_where_it_has_no_meaning_and_saved_with_its_attention(
    tmp_path,
):
    with pytest.raises(ValueError, match="at least 3 branches"):
        _okddip_cohort(2)
    trunk, branches = dense_branches(3)
    with pytest.raises(ValueError, match="branch 1 .* last layer returns its logits"):
        subclassed = _SubclassedBranch()
        keras_dml.MutualLearningModel(
            [branches[0], subclassed, branches[2]], trunk=trunk, mimicry="okddip"
        )
    x, y = data(32, seed=15)
    model = _okddip_cohort(3)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "okddip.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.mimicry.projection_dim == 2
    assert_weights_close(
        loaded.mimicry.query.get_weights(), model.mimicry.query.get_weights(), 0, 0
    )
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert_weights_close(loaded.get_weights(), model.get_weights())


@pytest.mark.parametrize("name", ["one", "okddip"])
def test_a_branch_method_outside_a_branch_cohort_says_how_to_build_it(name):
    x, y = data(8, seed=16)
    logits = [keras.ops.convert_to_tensor(x[:, :NUM_CLASSES]) for _ in range(3)]
    with pytest.raises(ValueError, match=f"mimicry='{name}'"):
        keras_dml.losses.mutual_learning_losses(y, logits, mimicry=name)
