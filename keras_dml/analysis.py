"""Why mutual learning helps, measured on any trained cohort or peer.

The DML paper (Zhang et al. 2018, Section 4.4) explains its gains by two
observations, both measured here:

- DML peers' posteriors have higher entropy (they are less over-confident):
  `posterior_entropy`, the mean entropy of softmax(z) over a dataset.
- DML finds wider minima: the training loss rises less when Gaussian noise
  of standard deviation sigma is added to every weight
  (`loss_under_weight_noise`, the paper's Figure 4).

Both run on any backend and leave the models as they were.
"""

import numpy as np
from keras import ops

from keras_dml.checks import check_number
from keras_dml.cohort.peer_calls import split_peer_output


def _peers(model):
    """The peers of a cohort, or the model itself in a list."""
    return list(getattr(model, "peers", None) or [model])


def _as_batches(data, batch_size):
    """`(x, y)` batches of `data`: an `(images, labels)` pair of arrays, or
    an iterable of `(x, y)` batches (a tf.data dataset, a PyDataset)."""
    if isinstance(data, tuple) and len(data) == 2:
        images, labels = data
        return [
            (images[i : i + batch_size], labels[i : i + batch_size])
            for i in range(0, len(images), batch_size)
        ]
    return data


def _logits(peer, x):
    logits, _ = split_peer_output(peer(x, training=False), peer.name)
    return ops.convert_to_numpy(ops.cast(logits, "float32"))


def _per_peer_logits(peers, data, batch_size):
    """Every peer's logits over `data` in one pass of the data, and the
    labels."""
    outputs = [[] for _ in peers]
    labels = []
    for x, y in _as_batches(data, batch_size):
        for k, peer in enumerate(peers):
            outputs[k].append(_logits(peer, x))
        labels.append(np.asarray(y).reshape(-1))
    return [np.concatenate(o) for o in outputs], np.concatenate(labels)


def _log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def posterior_entropy(model, data, *, batch_size=256):
    """Mean entropy (nats) of each peer's predicted distribution over `data`.

    Args:
        model: a `MutualLearningModel` (every peer) or one Keras model
            returning logits.
        data: `(images, labels)` arrays, or `(x, y)` batches (e.g. a
            tf.data dataset); labels are not used.
        batch_size: for arrays.

    Returns:
        A list of floats, one per peer: mean over examples of
        `-sum_c p_c log p_c`, p = softmax(logits). The maximum is
        log(num_classes).
    """
    logits, _ = _per_peer_logits(_peers(model), data, batch_size)
    entropies = []
    for z in logits:
        log_p = _log_softmax(z.astype(np.float64))
        entropies.append(float(np.mean(-np.sum(np.exp(log_p) * log_p, axis=-1))))
    return entropies


def _cross_entropy(logits, labels):
    log_p = _log_softmax(logits.astype(np.float64))
    return float(np.mean(-log_p[np.arange(len(labels)), labels]))


def loss_under_weight_noise(model, data, sigmas, *, repeats=3, seed=0, batch_size=256):
    """Each peer's cross-entropy on `data` after Gaussian noise is added to its
    weights: the width of the minimum it found (the DML paper's Figure 4).

    For every sigma and repeat, independent noise N(0, sigma^2) is added to
    every trainable weight of the peer (BatchNorm's moving statistics are
    left alone), the mean cross-entropy over `data` is measured in inference
    mode, and the weights are put back exactly.

    Args:
        model: a `MutualLearningModel` (every peer) or one Keras model.
        data: `(images, labels)` arrays (the training set, in the paper) or
            `(x, y)` batches; labels are integer class ids.
        sigmas: noise standard deviations, e.g. `[0, 0.01, 0.02, 0.05]`.
        repeats: noise draws per sigma (averaged).
        seed: seed of the noise: the same draws for every model compared.

    Returns:
        A float array `[num_peers, len(sigmas)]` of mean cross-entropies.
    """
    peers = _peers(model)
    sigmas = [float(s) for s in sigmas]
    if any(not np.isfinite(s) or s < 0 for s in sigmas):
        raise ValueError(f"`sigmas` must be finite and >= 0. Received: {sigmas}")
    check_number("`repeats`", repeats, 1, integer=True)
    batches = list(_as_batches(data, batch_size))
    losses = np.zeros((len(peers), len(sigmas)))
    for k, peer in enumerate(peers):
        variables = peer.trainable_variables
        saved = [ops.convert_to_numpy(v) for v in variables]
        # One generator per peer: every peer gets the same sequence of draws.
        rng = np.random.default_rng(seed)
        try:
            for i, sigma in enumerate(sigmas):
                draws = 1 if sigma == 0 else repeats
                total = 0.0
                for _ in range(draws):
                    for variable, value in zip(variables, saved):
                        noise = rng.normal(0.0, sigma, size=value.shape)
                        variable.assign((value + noise).astype(value.dtype))
                    logits, labels = _per_peer_logits([peer], batches, batch_size)
                    total += _cross_entropy(logits[0], labels.astype(np.int64))
                losses[k, i] = total / draws
        finally:
            for variable, value in zip(variables, saved):
                variable.assign(value)
    return losses
