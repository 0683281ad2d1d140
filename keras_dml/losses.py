"""The Deep Mutual Learning loss as pure functions of labels and logits.

For peer k of a cohort of K, with logits z_k and p_k = softmax(z_k / T):

    L_k = CE(y, softmax(z_k)) + w * T^2 * 1/(K-1) * sum_{j != k} KL(sg(p_j) || p_k)

`sg` is stop-gradient: the other peers are fixed targets for peer k, so the
gradient of L_k reaches peer k's weights only. `MutualLearningModel.train_step`
calls `mutual_learning_terms`; `mutual_learning_losses` is the same math
returning only the per-peer totals.

Reference:
    Zhang, Xiang, Hospedales, Lu. "Deep Mutual Learning". CVPR 2018.
    https://arxiv.org/abs/1706.00384
"""

import collections
import math
import numbers

from keras import ops

MIMICRY_MODES = ("pairwise", "ensemble")

PeerLossTerms = collections.namedtuple("PeerLossTerms", ["loss", "ce", "kl"])
PeerLossTerms.__doc__ = """One peer's loss and its two parts, each a float32 scalar.

Attributes:
    loss: `ce + kl_weight * temperature**2 * kl`, what the peer minimises.
    ce: cross-entropy with the labels, averaged over the labeled examples
        (0 when the batch has none).
    kl: the mimicry KL divergence, averaged over all examples.
"""


def validate_hyperparameters(kl_weight, temperature, mimicry, label_smoothing=0.0):
    """Raises ValueError naming the first bad DML hyperparameter."""
    if (
        isinstance(kl_weight, bool)
        or not isinstance(kl_weight, numbers.Real)
        or not math.isfinite(kl_weight)
        or kl_weight < 0
    ):
        raise ValueError(
            "`kl_weight` must be a finite number >= 0 (0 trains the peers "
            f"independently). Received: kl_weight={kl_weight!r}"
        )
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(
            "`temperature` must be a finite number > 0. "
            f"Received: temperature={temperature!r}"
        )
    if mimicry not in MIMICRY_MODES:
        raise ValueError(
            f"`mimicry` must be one of {MIMICRY_MODES}. Received: mimicry={mimicry!r}"
        )
    if (
        isinstance(label_smoothing, bool)
        or not isinstance(label_smoothing, numbers.Real)
        or not 0 <= label_smoothing < 1
    ):
        raise ValueError(
            "`label_smoothing` must be a number in [0, 1). "
            f"Received: label_smoothing={label_smoothing!r}"
        )


def labeled_mask(labels):
    """Flat int32 labels with unlabeled (< 0) replaced by 0, and a float mask."""
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    labeled = ops.greater_equal(labels, 0)
    return ops.where(labeled, labels, 0), ops.cast(labeled, "float32")


def sparse_cross_entropy_sum(labels, logits, label_smoothing=0.0):
    """Softmax cross-entropy summed over the labeled examples.

    Args:
        labels: int class ids, shape [batch] or [batch, 1]; < 0 means unlabeled.
        logits: [batch, num_classes].
        label_smoothing: mixes the one-hot target with the uniform distribution,
            as `keras.losses.CategoricalCrossentropy(label_smoothing=...)` does.

    Returns:
        `(sum of CE over labeled examples, number of labeled examples)`, float32.
    """
    safe_labels, mask = labeled_mask(labels)
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    nll = -ops.take_along_axis(log_probs, safe_labels[:, None], axis=-1)[:, 0]
    if label_smoothing:
        # -sum_c ((1 - e) * onehot_c + e / C) * log p_c
        uniform_nll = -ops.mean(log_probs, axis=-1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform_nll
    return ops.sum(nll * mask), ops.sum(mask)


def kl_divergence_sum(target_log_probs, log_probs):
    """Sum over the batch of KL(p || q), both given as log-probabilities.

    Working from log-probabilities on both sides avoids log(0) when a target
    probability underflows: exp(-inf-ish) * finite is 0, not NaN.
    """
    return ops.sum(ops.exp(target_log_probs) * (target_log_probs - log_probs))


def combine_terms(ce, kl, kl_weight, temperature):
    """`ce + w * T^2 * kl`.

    Gradients of a KL between softened distributions shrink as 1/T^2, so the
    T^2 factor keeps the mimicry term's pull on the weights comparable across
    temperatures (Hinton et al., 2015).
    """
    return ce + (kl_weight * temperature**2) * kl


def mutual_learning_terms(
    labels,
    logits_list,
    *,
    kl_weight=1.0,
    temperature=1.0,
    mimicry="pairwise",
    label_smoothing=0.0,
    peer_indices=None,
):
    """Every requested peer's DML loss with its CE and KL parts.

    Args:
        labels: int class ids, shape [batch] or [batch, 1]; labels < 0 mark
            unlabeled examples, which add only the KL term.
        logits_list: K >= 2 tensors [batch, num_classes], one per peer. Any
            float dtype; the loss is computed in float32.
        kl_weight: weight w of the mimicry term (0: independent training).
        temperature: T of the softened distributions in the KL term.
        mimicry: "pairwise" averages KL(p_j || p_k) over the other peers j
            (the paper's DML); "ensemble" uses one KL to the mean of the other
            peers' distributions (the paper's DML_e).
        label_smoothing: label smoothing of the CE term.
        peer_indices: which peers to compute (default: all), e.g. `[k]` when
            only peer k is about to be updated.

    Returns:
        A list of `PeerLossTerms(loss, ce, kl)`, one per requested peer.
    """
    validate_hyperparameters(kl_weight, temperature, mimicry, label_smoothing)
    num_peers = len(logits_list)
    if num_peers < 2:
        raise ValueError(
            "Mutual learning needs logits from at least 2 peers. "
            f"Received: {num_peers} logits tensor(s)."
        )
    logits_list = [ops.cast(z, "float32") for z in logits_list]
    shapes = [tuple(z.shape) for z in logits_list]
    if any(len(s) != 2 for s in shapes) or len({s[-1] for s in shapes}) != 1:
        raise ValueError(
            "Every peer's logits must be [batch, num_classes] with the same "
            f"num_classes. Received shapes: {shapes}"
        )
    if peer_indices is None:
        peer_indices = range(num_peers)

    soft_log_probs = [ops.log_softmax(z / temperature, axis=-1) for z in logits_list]
    # Peer j is a fixed target for every other peer: no gradient flows into it
    # through another peer's loss.
    targets = [ops.stop_gradient(lp) for lp in soft_log_probs]
    num_examples = ops.cast(ops.shape(logits_list[0])[0], "float32")

    terms = []
    for k in peer_indices:
        ce_sum, num_labeled = sparse_cross_entropy_sum(
            labels, logits_list[k], label_smoothing
        )
        others = [targets[j] for j in range(num_peers) if j != k]
        if mimicry == "pairwise":
            kl_sum = sum(kl_divergence_sum(t, soft_log_probs[k]) for t in others)
            kl_sum = kl_sum / (num_peers - 1)
        else:
            # log(mean_j p_j), computed in log space.
            mean_target = ops.logsumexp(ops.stack(others), axis=0) - math.log(
                num_peers - 1
            )
            kl_sum = kl_divergence_sum(mean_target, soft_log_probs[k])
        ce = ops.divide_no_nan(ce_sum, num_labeled)
        kl = kl_sum / ops.maximum(num_examples, 1.0)
        terms.append(
            PeerLossTerms(combine_terms(ce, kl, kl_weight, temperature), ce, kl)
        )
    return terms


def mutual_learning_losses(
    labels,
    logits_list,
    *,
    kl_weight=1.0,
    temperature=1.0,
    mimicry="pairwise",
    label_smoothing=0.0,
):
    """The K per-peer Deep Mutual Learning losses.

    Same arguments as `mutual_learning_terms`.

    Returns:
        A list of K float32 scalars: CE (over labeled examples) +
        kl_weight * T^2 * KL (over all examples).

    Example:

    ```python
    losses = keras_dml.losses.mutual_learning_losses(
        labels, [logits_a, logits_b], kl_weight=1.0
    )
    ```
    """
    terms = mutual_learning_terms(
        labels,
        logits_list,
        kl_weight=kl_weight,
        temperature=temperature,
        mimicry=mimicry,
        label_smoothing=label_smoothing,
    )
    return [t.loss for t in terms]
