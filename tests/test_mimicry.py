"""The mimicry methods: targets against NumPy references, the copies kept by
temporal mean teachers and codistillation, a method written by a user, and
saving, resume and export with each."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_dml
from keras_dml import mimicry
from keras_dml.cohort.losses import mutual_learning_terms
from tests.helpers import NUM_CLASSES, data, dense_peer, image_peer


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _kl(target_logits, logits, temperature):
    """Mean over the batch of KL(softmax(target / T) || softmax(z / T))."""
    p = _log_softmax(target_logits / temperature)
    q = _log_softmax(logits / temperature)
    return float(np.mean(np.sum(np.exp(p) * (p - q), axis=-1)))


def _ce(labels, logits):
    labeled = labels >= 0
    if not labeled.any():
        return 0.0
    log_probs = _log_softmax(logits[labeled])
    return float(-np.mean(log_probs[np.arange(labeled.sum()), labels[labeled]]))


def _project_to_simplex(v):
    """The nearest point of the probability simplex (Duchi et al. 2008)."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1
    rho = np.nonzero(u - cumulative / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - cumulative[rho] / (rho + 1), 0)


def _linear_weights(labels, stacked):
    """KDCL-Linear's weights by projected gradient descent, an algorithm other
    than the model's, run far longer."""
    labeled = labels >= 0
    z, y = stacked[:, labeled].astype("float64"), labels[labeled]
    w = np.full(len(stacked), 1 / len(stacked))
    if not labeled.any():
        return w
    for _ in range(20000):
        probs = np.exp(_log_softmax(np.tensordot(w, z, 1)))
        probs[np.arange(len(y)), y] -= 1
        w = _project_to_simplex(w - 0.002 * np.einsum("bc,mbc->m", probs, z) / len(y))
    return w


def _general_weights(num_peers):
    return np.linspace(1.0, 2.0, num_peers) / np.linspace(1.0, 2.0, num_peers).sum()


def _kdcl_teacher(labels, logits, variant):
    """KDCL's teacher logits, example by example, as the paper defines them."""
    stacked = np.stack(logits)  # [K, batch, classes]
    if variant == "general":  # The weights the test sets.
        return np.tensordot(_general_weights(len(logits)), stacked, 1)
    if variant == "linear":
        return np.tensordot(_linear_weights(labels, stacked), stacked, 1)
    teacher = stacked.mean(axis=0)  # Unlabeled: the mean of the logits.
    for b, y in enumerate(labels):
        if y < 0:
            continue
        if variant == "min_logit":
            teacher[b] = np.min(stacked[:, b, :] - stacked[:, b, y : y + 1], axis=0)
        else:
            ce = [-_log_softmax(stacked[m, b])[y] for m in range(len(logits))]
            teacher[b] = stacked[int(np.argmin(ce)), b]
    return teacher


def _random_logits(num_peers, batch=12, seed=0):
    rng = np.random.default_rng(seed)
    logits = [3 * rng.normal(size=(batch, NUM_CLASSES)) for _ in range(num_peers)]
    labels = rng.integers(0, NUM_CLASSES, size=batch)
    labels[[1, 5, 6]] = -1
    return labels.astype("int32"), [z.astype("float32") for z in logits]


@pytest.mark.parametrize("variant", mimicry.KDCL_VARIANTS)
@pytest.mark.parametrize("num_peers", [2, 3])
def test_kdcl_matches_numpy_reference(variant, num_peers):
    labels, logits = _random_logits(num_peers, seed=num_peers)
    temperature, kl_weight = 2.0, 0.7
    teacher = _kdcl_teacher(labels, logits, variant)
    method = mimicry.KDCL(variant)
    if variant == "general":
        method.setup([None] * num_peers)  # Only their number counts.
        method.ensemble_weights.assign(_general_weights(num_peers))
    # KDCL-Linear's weights are an optimum reached by two iterative methods.
    tolerance = 1e-3 if variant == "linear" else 1e-6
    np.testing.assert_allclose(
        ops.convert_to_numpy(method.teacher(labels, logits)),
        teacher,
        rtol=tolerance,
        atol=tolerance,
    )
    terms = mutual_learning_terms(
        labels,
        logits,
        kl_weight=kl_weight,
        temperature=temperature,
        mimicry=method,
    )
    for k, term in enumerate(terms):
        kl = _kl(teacher, logits[k], temperature)
        ce = _ce(labels, logits[k])
        np.testing.assert_allclose(float(term.kl), kl, rtol=tolerance)
        np.testing.assert_allclose(float(term.ce), ce, rtol=1e-5)
        np.testing.assert_allclose(
            float(term.loss), ce + kl_weight * temperature**2 * kl, rtol=tolerance
        )


def test_kdcl_linear_weights_are_the_best_convex_combination():
    """On logits where one peer knows the labels, another is noise, and a
    third is that noise reversed, the weights are a point of the simplex no
    other point beats, and a batch without labels weighs the peers equally."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, NUM_CLASSES, size=32).astype("int32")
    good = 2 * np.eye(NUM_CLASSES)[labels] + rng.normal(size=(32, NUM_CLASSES))
    noise = 4 * rng.normal(size=(32, NUM_CLASSES))
    stacked = np.stack([good, noise, -noise]).astype("float32")
    weights = ops.convert_to_numpy(
        mimicry.linear_ensemble_weights(stacked, labels, np.ones(32, "float32"))
    )
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0, abs=1e-6)
    assert weights[0] > 0.5  # The peer that knows the labels leads.

    def cross_entropy(w):
        log_probs = _log_softmax(np.tensordot(w, stacked.astype("float64"), 1))
        return -np.mean(log_probs[np.arange(32), labels])

    best = cross_entropy(weights)
    for other in rng.dirichlet(np.ones(3), size=200):
        assert best <= cross_entropy(other) + 1e-6
    unlabeled = ops.convert_to_numpy(
        mimicry.linear_ensemble_weights(stacked, labels, np.zeros(32, "float32"))
    )
    np.testing.assert_allclose(unlabeled, [1 / 3] * 3, atol=1e-7)


def test_kdcl_general_weights_minimize_the_held_out_squared_error():
    """The generalized ensemble method's weights sum to 1 and no other such
    weights (negative ones included) give the ensemble of probabilities a
    lower squared error on the held-out examples; for two peers they are the
    closed form (C22 - C12) / (C11 + C22 - 2 C12)."""
    labels, logits = _random_logits(3, batch=40, seed=11)

    def squared_error(w):
        probs = [np.exp(_log_softmax(z.astype("float64"))) for z in logits]
        labeled = labels >= 0
        target = np.eye(NUM_CLASSES)[labels[labeled]]
        mixed = sum(wk * p[labeled] for wk, p in zip(w, probs))
        return np.mean(np.sum((mixed - target) ** 2, axis=-1))

    weights = mimicry.general_ensemble_weights(logits, labels)
    assert weights.sum() == pytest.approx(1.0)
    best = squared_error(weights)
    rng = np.random.default_rng(0)
    for _ in range(200):
        other = weights + rng.normal(scale=0.3, size=3)
        other[-1] = 1 - other[:-1].sum()
        assert best <= squared_error(other) + 1e-12
    two = mimicry.general_ensemble_weights(logits[:2], labels)
    probs = [np.exp(_log_softmax(z[labels >= 0].astype("float64"))) for z in logits]
    errors = [p - np.eye(NUM_CLASSES)[labels[labels >= 0]] for p in probs[:2]]
    c = [[np.mean(np.sum(a * b, -1)) for b in errors] for a in errors]
    expected = (c[1][1] - c[0][1]) / (c[0][0] + c[1][1] - 2 * c[0][1])
    assert two[0] == pytest.approx(expected, rel=1e-6)
    assert mimicry.general_ensemble_weights(logits, np.full(40, -1)) is None
    diverged = [logits[0], np.full_like(logits[1], np.nan), logits[2]]
    assert mimicry.general_ensemble_weights(diverged, labels) is None


def test_kdcl_general_refreshes_on_held_out_data_and_saves_its_weights(tmp_path):
    x, y = data(48, seed=4)
    held_x, held_y = data(24, seed=5)
    model = _cohort(mimicry.KDCL("general"))
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        callbacks=[mimicry.RefreshEnsembleWeights((held_x, held_y), batch_size=10)],
        verbose=0,
    )
    # Refitted after the last epoch, on the peers as they ended it.
    expected = mimicry.general_ensemble_weights(
        [np.asarray(z) for z in model.predict(held_x, verbose=0)], held_y
    )
    got = ops.convert_to_numpy(model.mimicry.ensemble_weights)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert not np.allclose(got, 0.5)
    assert history.history["peer1_ensemble_weight"][-1] == pytest.approx(got[1])
    model.save(tmp_path / "cohort.keras")
    loaded = keras.saving.load_model(tmp_path / "cohort.keras")
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded.mimicry.ensemble_weights), got
    )
    with pytest.raises(ValueError, match=r"refits KDCL\('general'\)'s weights"):
        _cohort(mimicry.KDCL("naive")).fit(
            x,
            y,
            epochs=1,
            callbacks=[mimicry.RefreshEnsembleWeights((held_x, held_y))],
            verbose=0,
        )


def test_kdcl_min_logit_puts_the_true_class_on_top_of_every_peer():
    labels, logits = _random_logits(3)
    teacher = ops.convert_to_numpy(mimicry.KDCL().teacher(labels, logits))
    labeled = labels >= 0
    np.testing.assert_array_equal(teacher[labeled, labels[labeled]], 0.0)
    # Every other class sits at least as far below as in any one peer.
    for z in logits:
        margins = z[labeled] - z[labeled, labels[labeled]][:, None]
        assert np.all(teacher[labeled] <= margins + 1e-6)


def test_copies_methods_match_pairwise_on_the_copies_logits():
    """Given the copies' logits, temporal mean and codistillation are pairwise
    DML towards them."""
    labels, logits = _random_logits(3)
    _, copies = _random_logits(3, seed=9)
    for method in (mimicry.TemporalMean(), mimicry.Codistillation()):
        got = mutual_learning_terms(
            labels, logits, temperature=3.0, mimicry=method, teacher_logits=copies
        )
        for k, term in enumerate(got):
            want = np.mean([_kl(copies[j], logits[k], 3.0) for j in range(3) if j != k])
            np.testing.assert_allclose(float(term.kl), want, rtol=1e-5)
        with pytest.raises(ValueError, match="pass `teacher_logits`"):
            mutual_learning_terms(labels, logits, mimicry=method)


# ------------------------------------------------------------- in a cohort


def _cohort(method, update="simultaneous", seed=0):
    peers = [dense_peer(1 + seed, batchnorm=True), dense_peer(3 + seed)]
    model = keras_dml.MutualLearningModel(
        peers, mimicry=method, temperature=2.0, update=update
    )
    model.compile(keras.optimizers.SGD(0.3, momentum=0.9))
    return model


def _float_values(peer):
    return [
        v.numpy()
        for v in [*peer.trainable_variables, *peer.non_trainable_variables]
        if "float" in str(v.dtype)
    ]


def _steps(model, num_steps, seed=0):
    """Trains one batch per step; returns each peer's float variables as
    they were at the start of every step."""
    x, y = data(16 * num_steps, seed=seed, unlabeled=5)
    seen = []
    for step in range(num_steps):
        seen.append([_float_values(peer) for peer in model.peers])
        batch = slice(16 * step, 16 * (step + 1))
        model.train_on_batch(x[batch], y[batch])
    return seen


def test_temporal_mean_keeps_the_ramped_average_of_the_weights():
    decay = 0.6
    model = _cohort(mimicry.TemporalMean(decay))
    seen = _steps(model, 5)
    for k in range(2):
        want = None
        for step, weights in enumerate(seen):
            rate = min(decay, 1 - 1 / (step + 1))
            values = weights[k]
            want = (
                values
                if want is None
                else [rate * a + (1 - rate) * w for a, w in zip(want, values)]
            )
        got = [c.numpy() for c in model.mimicry.copies(k) if c is not None]
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_codistillation_copies_are_the_weights_of_the_last_refresh():
    model = _cohort(mimicry.Codistillation(refresh_steps=3))
    seen = _steps(model, 5)
    # Refreshed at the start of steps 0 and 3.
    for k in range(2):
        got = [c.numpy() for c in model.mimicry.copies(k) if c is not None]
        for a, b in zip(got, seen[3][k]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "method",
    [mimicry.Codistillation(refresh_steps=1), mimicry.TemporalMean(decay=0.0)],
    ids=["codistillation_every_step", "temporal_mean_no_averaging"],
)
def test_copies_of_the_current_weights_train_as_dml(method):
    """Refreshed every step (or averaged with decay 0), the copies are the
    peers: the teachers' pass gives the peers' own logits and the cohort
    trains as pairwise DML, weights and logs."""
    dml = _cohort("pairwise")
    copies = _cohort(method)
    _steps(dml, 4)
    _steps(copies, 4)
    for peer_a, peer_b in zip(dml.peers, copies.peers):
        for a, b in zip(peer_a.get_weights(), peer_b.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_dml_e_trains_exactly_as_dml():
    """With stop-gradient targets the KL's gradient, (p_k - target) / T, is
    linear in the target: DML_e's KL to the mean of the other peers has the
    gradient of DML's mean of KLs, for any K. Only the logged KL differs."""
    x, y = data(48, unlabeled=6)
    models = {}
    for name in ("pairwise", "ensemble"):
        peers = [dense_peer(1, batchnorm=True), dense_peer(3), dense_peer(5)]
        model = keras_dml.MutualLearningModel(peers, mimicry=name, temperature=2.0)
        model.compile(keras.optimizers.SGD(0.3, momentum=0.9))
        history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        models[name] = (model, history)
    (dml, dml_history), (dml_e, dml_e_history) = models.values()
    for a, b in zip(dml.get_weights(), dml_e.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert dml_e_history.history["peer0_kl"][0] < dml_history.history["peer0_kl"][0]


def test_stale_teachers_change_training():
    fresh = _cohort(mimicry.Codistillation(refresh_steps=1))
    stale = _cohort(mimicry.Codistillation(refresh_steps=4))
    _steps(fresh, 3)
    _steps(stale, 3)
    differences = [
        np.max(np.abs(a - b))
        for a, b in zip(fresh.peers[0].get_weights(), stale.peers[0].get_weights())
    ]
    assert max(differences) > 1e-4


@pytest.mark.parametrize("variant", mimicry.KDCL_VARIANTS)
def test_kdcl_trains_in_both_update_orders(variant):
    x, y = data(32, unlabeled=6)
    for update in ("simultaneous", "sequential"):
        model = _cohort(mimicry.KDCL(variant), update=update)
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        losses = history.history["loss"]
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
        assert history.history["peer1_kl"][-1] > 0


@pytest.mark.parametrize("name", ["temporal_mean", "codistillation"])
def test_copies_methods_refuse_the_sequential_order(name):
    with pytest.raises(ValueError, match="update='simultaneous' only: its teachers"):
        _cohort(name, update="sequential")


def test_a_users_method_without_the_sequential_order_is_refused_in_its_terms():
    class OneOrder(mimicry.Pairwise):
        supports_sequential = False

    with pytest.raises(ValueError) as error:
        _cohort(OneOrder(), update="sequential")
    message = str(error.value)
    assert "sets `supports_sequential = False`" in message and "OneOrder" in message
    assert "copies" not in message  # The built-in copies' reason is not its own.


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: mimicry.get("mean"), "mimicry='mean'"),
        (
            lambda: mimicry.KDCL("max_logit"),
            "`variant` must be one of min_logit, naive, linear, general. "
            "Received: variant=max_logit",
        ),
        (lambda: mimicry.TemporalMean(1.0), r"`decay` must be a number in \[0, 1\)"),
        (lambda: mimicry.TemporalMean(-0.1), "decay"),
        (lambda: mimicry.Codistillation(0), "refresh_steps"),
        (
            lambda: mimicry.Codistillation(2.5),
            "`refresh_steps` must be an integer >= 1. Received: refresh_steps=2.5",
        ),
    ],
)
def test_bad_arguments_raise(make, message):
    # The classes' checks (`check_arguments`) are also the scripts' flags'.
    with pytest.raises(ValueError, match=message):
        make()


def test_copies_are_per_cohort():
    method = mimicry.TemporalMean()
    keras_dml.MutualLearningModel([dense_peer(1), dense_peer(2)], mimicry=method)
    with pytest.raises(ValueError, match="another cohort"):
        keras_dml.MutualLearningModel(
            [dense_peer(1, batchnorm=True), dense_peer(2)], mimicry=method
        )


# ------------------------------------------------ saving, resume and export


@pytest.mark.parametrize(
    "method",
    [mimicry.TemporalMean(0.7), mimicry.Codistillation(3), mimicry.KDCL("naive")],
    ids=["temporal_mean", "codistillation", "kdcl"],
)
def test_resume_from_a_keras_file_continues_bit_for_bit(tmp_path, method):
    name = mimicry.name_of(method)
    config = method.get_config()
    model = _cohort(method)
    _steps(model, 2)
    path = str(tmp_path / "cohort.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.mimicry) is type(method)
    assert loaded.mimicry.get_config() == config
    for a, b in zip(model.weights, loaded.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    _steps(model, 3, seed=1)
    _steps(loaded, 3, seed=1)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{name} {a.path}")


@pytest.mark.tensorflow_only  # TF Serving export
def test_export_of_the_averaged_peers(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, size=24)
    model = keras_dml.MutualLearningModel(
        [image_peer(1), image_peer(3)], mimicry=mimicry.TemporalMean(0.5)
    )
    model.compile(keras.optimizers.SGD(0.5))
    model.fit(images / 255.0, labels, batch_size=8, epochs=2, verbose=0)
    own = [peer.get_weights() for peer in model.peers]
    written = keras_dml.export.export_peers(
        model, str(tmp_path), preprocessing="unit", use_averaged=True
    )
    # The peers keep their own weights.
    for peer, weights in zip(model.peers, own):
        for a, b in zip(peer.get_weights(), weights):
            np.testing.assert_array_equal(a, b)
    with model.mimicry.peers_as_copies(model.peers):
        averaged = [p(images / 255.0, training=False).numpy() for p in model.peers]
    for k, name in enumerate(keras_dml.export.folder_names(model.peers)):
        served = tf.saved_model.load(written[name]).signatures["serving_default"]
        got = served(images=tf.constant(images))["logits"].numpy()
        np.testing.assert_allclose(got, averaged[k], rtol=1e-4, atol=1e-5)
        live = model.peers[k](images / 255.0, training=False).numpy()
        assert np.max(np.abs(live - averaged[k])) > 1e-3


@pytest.mark.tensorflow_only  # TF Serving export
def test_export_of_averaged_peers_needs_temporal_mean(tmp_path):
    with pytest.raises(ValueError, match="temporal_mean"):
        keras_dml.export.export_peers(
            _cohort("pairwise"), str(tmp_path), use_averaged=True
        )
    assert not any(tmp_path.iterdir())


# ------------------------------------------------- a method of one's own


@keras.saving.register_keras_serializable(package="keras_dml_tests")
class SharpenedMean(mimicry.Mimicry):
    """Every peer mimics the mean logits of the peers, sharpened."""

    def __init__(self, sharpness=2.0, **kwargs):
        super().__init__(**kwargs)
        self.sharpness = sharpness

    def targets(self, labels, teacher_logits, temperature):
        mean = ops.mean(ops.stack(teacher_logits), axis=0) * self.sharpness
        target = ops.log_softmax(mean / temperature, axis=-1)
        return [[(target, 1.0)] for _ in teacher_logits]

    def get_config(self):
        return {**super().get_config(), "sharpness": self.sharpness}


def test_a_user_written_method_trains_saves_and_loads(tmp_path):
    x, y = data(32, unlabeled=4)
    model = _cohort(SharpenedMean(3.0))
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))

    labels, logits = _random_logits(2)
    terms = mutual_learning_terms(
        labels, logits, temperature=2.0, mimicry=SharpenedMean(3.0)
    )
    teacher = 3.0 * np.mean(logits, axis=0)
    for k, term in enumerate(terms):
        np.testing.assert_allclose(
            float(term.kl), _kl(teacher, logits[k], 2.0), rtol=1e-5
        )

    path = str(tmp_path / "own.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.mimicry, SharpenedMean)
    assert loaded.mimicry.sharpness == 3.0
    np.testing.assert_allclose(
        loaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-6
    )


def test_a_method_without_targets_says_what_to_implement():
    class Incomplete(mimicry.Mimicry):
        pass

    model = _cohort(Incomplete())
    x, y = data(8)
    with pytest.raises(NotImplementedError, match="must implement `targets"):
        model.train_on_batch(x, y)


@pytest.mark.parametrize("name", ["kdcl", "temporal_mean", "codistillation"])
def test_mixed_precision_trains_with_float32_copies(name):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # conftest resets
    x, y = data(64, seed=9, unlabeled=8)
    model = _cohort(mimicry.get(name))
    first = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    history = model.fit(x, y, batch_size=16, epochs=6, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.evaluate(x, y, verbose=0, return_dict=True)["loss"] < first
    assert {str(v.dtype) for v in model.mimicry.weights} <= {"float32"}
