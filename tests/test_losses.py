"""The DML loss against an independent NumPy computation."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from keras_dml import losses


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _reference(
    labels, logits_list, kl_weight, temperature, mimicry, label_smoothing=0.0
):
    """Straight from the formula of DESIGN.md, in float64, example by example."""
    num_peers, num_classes = len(logits_list), logits_list[0].shape[-1]
    probs_t = [np.exp(_log_softmax(z / temperature)) for z in logits_list]
    labeled = [i for i, y in enumerate(labels) if y >= 0]
    out = []
    for k in range(num_peers):
        log_p = _log_softmax(logits_list[k])
        ce = 0.0
        for i in labeled:
            target = np.full(num_classes, label_smoothing / num_classes)
            target[labels[i]] += 1.0 - label_smoothing
            ce -= (target * log_p[i]).sum()
        ce = ce / len(labeled) if labeled else 0.0
        others = [probs_t[j] for j in range(num_peers) if j != k]
        q = probs_t[k]
        if mimicry == "pairwise":
            kl = np.mean([(p * np.log(p / q)).sum(axis=-1).mean() for p in others])
        else:
            p = np.mean(others, axis=0)
            kl = (p * np.log(p / q)).sum(axis=-1).mean()
        out.append(ce + kl_weight * temperature**2 * kl)
    return out


CASES = list(
    itertools.product([2, 3, 4], ["pairwise", "ensemble"], [1.0, 4.0], [False, True])
)


@pytest.mark.parametrize("num_peers,mimicry,temperature,unlabeled", CASES)
def test_matches_numpy_reference(num_peers, mimicry, temperature, unlabeled):
    rng = np.random.default_rng(num_peers * 100 + int(temperature) * 10 + unlabeled)
    batch, num_classes = 16, 7
    logits = [
        rng.normal(scale=3.0, size=(batch, num_classes)) for _ in range(num_peers)
    ]
    labels = rng.integers(0, num_classes, size=batch)
    if unlabeled:
        labels[rng.choice(batch, size=6, replace=False)] = -1
    got = losses.mutual_learning_losses(
        labels,
        [z.astype("float32") for z in logits],
        kl_weight=0.7,
        temperature=temperature,
        mimicry=mimicry,
    )
    want = _reference(labels, logits, 0.7, temperature, mimicry)
    np.testing.assert_allclose([float(v) for v in got], want, rtol=1e-5, atol=1e-6)


def test_label_smoothing_matches_reference():
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(8, 5)) for _ in range(2)]
    labels = np.array([0, 1, 2, 3, 4, -1, 0, 1])
    got = losses.mutual_learning_losses(
        labels, [z.astype("float32") for z in logits], label_smoothing=0.1
    )
    want = _reference(labels, logits, 1.0, 1.0, "pairwise", label_smoothing=0.1)
    np.testing.assert_allclose([float(v) for v in got], want, rtol=1e-5)


def test_terms_split_loss_into_ce_and_kl():
    rng = np.random.default_rng(1)
    logits = [rng.normal(size=(8, 5)).astype("float32") for _ in range(3)]
    labels = rng.integers(0, 5, size=8)
    terms = losses.mutual_learning_terms(labels, logits, kl_weight=0.5, temperature=2.0)
    for t in terms:
        assert float(t.loss) == pytest.approx(
            float(t.ce) + 0.5 * 4.0 * float(t.kl), rel=1e-6
        )
    only_second = losses.mutual_learning_terms(
        labels, logits, kl_weight=0.5, temperature=2.0, peer_indices=[1]
    )
    assert float(only_second[0].loss) == pytest.approx(float(terms[1].loss), rel=1e-6)


@pytest.mark.tensorflow_only  # tf.GradientTape; the backends share the loss
def test_peer_loss_has_no_gradient_into_other_peers():
    rng = np.random.default_rng(2)
    logits = [tf.Variable(rng.normal(size=(6, 4)).astype("float32")) for _ in range(3)]
    labels = np.array([0, 1, 2, 3, -1, 0])
    for k in range(3):
        with tf.GradientTape() as tape:
            loss_k = losses.mutual_learning_losses(labels, logits)[k]
        grads = tape.gradient(loss_k, logits)
        for j, g in enumerate(grads):
            if j == k:
                assert g is not None and np.abs(g.numpy()).sum() > 0
            else:
                assert g is None or not np.any(g.numpy())


def test_identical_peers_have_zero_kl_and_all_unlabeled_zero_ce():
    z = np.random.default_rng(3).normal(size=(5, 4)).astype("float32")
    terms = losses.mutual_learning_terms(np.full(5, -1), [z, z.copy()])
    for t in terms:
        assert float(t.ce) == 0.0
        assert abs(float(t.kl)) < 1e-6


def test_extreme_logits_stay_finite():
    z1 = np.array([[1000.0, -1000.0, 0.0]], dtype="float32")
    z2 = np.array([[-1000.0, 1000.0, 0.0]], dtype="float32")
    values = losses.mutual_learning_losses(np.array([0]), [z1, z2])
    assert all(np.isfinite(float(v)) for v in values)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"kl_weight": -1.0}, "kl_weight=-1.0"),
        ({"kl_weight": float("nan")}, "kl_weight=nan"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"mimicry": "mean"}, "mimicry='mean'"),
        ({"label_smoothing": 1.0}, "label_smoothing=1.0"),
        ({"kl_reduction": "max"}, "kl_reduction='max'"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, message):
    z = np.zeros((2, 3), "float32")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        losses.mutual_learning_losses(np.array([0, 1]), [z, z], **kwargs)


@pytest.mark.parametrize(
    "num_peers,mimicry", [(2, "pairwise"), (4, "pairwise"), (4, "ensemble")]
)
def test_kl_reduction_sum_adds_the_kl_to_each_other_peer(num_peers, mimicry):
    # The official DML code adds the KLs to the other peers (tf.add_n); the
    # paper's text averages them. One target (ensemble, or K=2): the same.
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 5, 6)
    logits = [rng.normal(size=(6, 5)).astype("float32") for _ in range(num_peers)]
    kwargs = {"kl_weight": 1.0, "temperature": 2.0, "mimicry": mimicry}
    mean = losses.mutual_learning_terms(labels, logits, **kwargs)
    summed = losses.mutual_learning_terms(labels, logits, kl_reduction="sum", **kwargs)
    targets = num_peers - 1 if mimicry == "pairwise" else 1
    for a, b in zip(mean, summed):
        np.testing.assert_allclose(float(b.kl), targets * float(a.kl), rtol=1e-6)
        np.testing.assert_allclose(float(b.ce), float(a.ce), rtol=1e-6)
        np.testing.assert_allclose(
            float(b.loss), float(a.ce) + 4.0 * targets * float(a.kl), rtol=1e-5
        )


def test_bad_logits_raise():
    z = np.zeros((2, 3), "float32")
    with pytest.raises(ValueError, match="at least 2 peers"):
        losses.mutual_learning_losses(np.array([0, 1]), [z])
    with pytest.raises(ValueError, match="same num_classes"):
        losses.mutual_learning_losses(
            np.array([0, 1]), [z, np.zeros((2, 4), "float32")]
        )
