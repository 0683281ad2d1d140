"""The Deep Mutual Learning loss as pure functions of labels and logits.

For peer k of a cohort of K, with logits z_k and p_k = softmax(z_k / T):

    L_k = CE(y, softmax(z_k)) + w * T^2 * 1/(K-1) * sum_{j != k} KL(sg(p_j) || p_k)

`sg` is stop-gradient: the other peers are fixed targets for peer k, so the
gradient of L_k reaches peer k's weights only. That is DML's ("pairwise")
mimicry term; the others of the family (`keras_dml.mimicry`) change only the
targets: L_k = CE + w * T^2 * sum over peer k's targets t of weight_t *
KL(sg(t) || p_k). `MutualLearningModel.train_step` calls
`mutual_learning_terms`; `mutual_learning_losses` is the same math returning
only the per-peer totals.

Reference:
    Zhang, Xiang, Hospedales, Lu. "Deep Mutual Learning". CVPR 2018.
    https://arxiv.org/abs/1706.00384
"""

import collections

from keras import ops

from keras_dml.checks import check_number
from keras_dml.cohort import mimicry as mimicry_methods
from keras_dml.cohort.labels import labeled_mask

# The built-in mimicry methods, by name.
MIMICRY_MODES = mimicry_methods.NAMES

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
    check_number("`kl_weight`", kl_weight, 0, why=" (0 trains the peers independently)")
    check_number("`temperature`", temperature, 0, low_open=True)
    mimicry_methods.get(mimicry)  # Raises for an unknown name.
    check_number("`label_smoothing`", label_smoothing, 0, 1, high_open=True)


KL_REDUCTIONS = ("mean", "sum")


def check_kl_reduction(kl_reduction):
    if kl_reduction not in KL_REDUCTIONS:
        raise ValueError(
            f"`kl_reduction` must be one of {KL_REDUCTIONS} (the mean over a "
            "peer's targets, as the DML paper writes it, or their sum, as its "
            f"official code computes it). Received: kl_reduction={kl_reduction!r}"
        )


def sparse_cross_entropy_sum(labels, logits, label_smoothing=0.0, sample_weight=None):
    """Softmax cross-entropy summed over the labeled examples.

    Args:
        labels: int class ids, shape [batch] or [batch, 1]; < 0 means unlabeled.
        logits: [batch, num_classes].
        label_smoothing: mixes the one-hot target with the uniform distribution,
            as `keras.losses.CategoricalCrossentropy(label_smoothing=...)` does.
        sample_weight: optional [batch] weights, each example's CE times its
            weight (the count of labeled examples stays unweighted, as Keras
            divides a weighted loss by the batch size, not the weights' sum).

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
    weighted = nll * mask
    if sample_weight is not None:
        weighted = weighted * _per_example(sample_weight)
    return ops.sum(weighted), ops.sum(mask)


def _per_example(sample_weight):
    return ops.reshape(ops.cast(sample_weight, "float32"), (-1,))


def kl_divergence(target_log_probs, log_probs):
    """KL(p || q) per example [batch], both given as log-probabilities.

    Working from log-probabilities on both sides avoids log(0) when a target
    probability underflows: exp(-inf-ish) * finite is 0, not NaN.
    """
    return ops.sum(ops.exp(target_log_probs) * (target_log_probs - log_probs), axis=-1)


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
    teacher_logits=None,
    fixed_teacher_logits=(),
    sample_weight=None,
    kl_reduction="mean",
):
    """Every requested peer's loss with its CE and KL parts.

    Args:
        labels: int class ids, shape [batch] or [batch, 1]; labels < 0 mark
            unlabeled examples, which add only the KL term.
        logits_list: K >= 2 tensors [batch, num_classes], one per peer. Any
            float dtype; the loss is computed in float32.
        kl_weight: weight w of the mimicry term (0: independent training).
        temperature: T of the softened distributions in the KL term.
        mimicry: what each peer mimics: a name of `keras_dml.mimicry.NAMES`
            or a `keras_dml.mimicry.Mimicry`. "pairwise" averages
            KL(p_j || p_k) over the other peers j (the paper's DML);
            "ensemble" uses one KL to the mean of the other peers'
            distributions (the paper's DML_e).
        label_smoothing: label smoothing of the CE term.
        peer_indices: which peers to compute (default: all), e.g. `[k]` when
            only peer k is about to be updated.
        teacher_logits: the K teachers' logits the targets are built from
            (default: `logits_list`); methods that keep copies of the peers
            ("temporal_mean", "codistillation") need the copies' logits.
        fixed_teacher_logits: logits of pre-trained teachers that are not
            peers (offline distillation): the method builds every peer's
            targets from the K teachers and these, as from a cohort of K + 1
            (with "pairwise", peer k averages its KL over the other peers
            and the teacher; one peer and one teacher is Hinton et al.'s
            knowledge distillation). They get no loss of their own.
        sample_weight: optional [batch] weights of the examples: each
            example's CE and KL are multiplied by its weight, and the means
            keep their unweighted denominators (labeled examples for CE, all
            examples for KL), as Keras weights a loss.
        kl_reduction: "mean" (the method's weights: the paper's text
            averages over the other peers) or "sum" (each weight times the
            number of peer k's targets: with "pairwise" the sum of the KLs to
            the other peers, as the official DML code adds them, `tf.add_n`;
            the same for one target).

    Returns:
        A list of `PeerLossTerms(loss, ce, kl)`, one per requested peer.
    """
    validate_hyperparameters(kl_weight, temperature, mimicry, label_smoothing)
    check_kl_reduction(kl_reduction)
    method = mimicry_methods.get(mimicry)
    num_peers = len(logits_list)
    fixed = [ops.stop_gradient(ops.cast(z, "float32")) for z in fixed_teacher_logits]
    if num_peers + len(fixed) < 2:
        raise ValueError(
            "Mutual learning needs logits from at least 2 peers, or 1 peer and a "
            f"fixed teacher. Received: {num_peers} logits tensor(s)."
        )
    logits_list = [ops.cast(z, "float32") for z in logits_list]
    _check_shapes("logits", logits_list)
    if teacher_logits is None:
        if method.uses_peer_copies:
            raise ValueError(
                f"mimicry={mimicry_methods.name_of(method)!r} mimics copies of the "
                "peers, not their current logits: pass `teacher_logits` (the "
                "copies' logits), or train with MutualLearningModel, which keeps "
                "the copies."
            )
        teacher_logits = logits_list
    if len(teacher_logits) != num_peers:
        raise ValueError(
            f"Got {len(teacher_logits)} teacher logits for {num_peers} peers."
        )
    # The teachers are fixed targets: no gradient flows into any peer
    # through another peer's loss.
    teachers = [ops.stop_gradient(ops.cast(z, "float32")) for z in teacher_logits]
    teachers += fixed
    _check_shapes("teacher logits", [*logits_list[:1], *teachers])
    if peer_indices is None:
        peer_indices = range(num_peers)

    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    targets = method.targets(labels, teachers, temperature)
    if len(targets) != len(teachers):
        raise ValueError(
            f"{type(method).__name__}.targets returned targets for {len(targets)} "
            f"peers; the cohort has {len(teachers)} (with its fixed teachers)."
        )
    num_examples = ops.cast(ops.shape(logits_list[0])[0], "float32")
    example_weights = None if sample_weight is None else _per_example(sample_weight)
    terms = []
    for k in peer_indices:
        ce_sum, num_labeled = sparse_cross_entropy_sum(
            labels, logits_list[k], label_smoothing, example_weights
        )
        log_probs = ops.log_softmax(logits_list[k] / temperature, axis=-1)
        kl_sum = 0.0
        for target, weight in targets[k]:
            per_example = kl_divergence(ops.stop_gradient(target), log_probs)
            if example_weights is not None:
                per_example = per_example * example_weights
            kl_sum = kl_sum + ops.sum(weight * per_example)
        if kl_reduction == "sum":
            kl_sum = kl_sum * float(len(targets[k]))
        ce = ops.divide_no_nan(ce_sum, num_labeled)
        kl = kl_sum / ops.maximum(num_examples, 1.0)
        terms.append(
            PeerLossTerms(combine_terms(ce, kl, kl_weight, temperature), ce, kl)
        )
    return terms


def _check_shapes(what, logits_list):
    shapes = [tuple(z.shape) for z in logits_list]
    if any(len(s) != 2 for s in shapes) or len({s[-1] for s in shapes}) != 1:
        raise ValueError(
            f"Every peer's {what} must be [batch, num_classes] with the same "
            f"num_classes. Received shapes: {shapes}"
        )


def mutual_learning_losses(
    labels,
    logits_list,
    *,
    kl_weight=1.0,
    temperature=1.0,
    mimicry="pairwise",
    label_smoothing=0.0,
    teacher_logits=None,
    fixed_teacher_logits=(),
    sample_weight=None,
    kl_reduction="mean",
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
        teacher_logits=teacher_logits,
        fixed_teacher_logits=fixed_teacher_logits,
        sample_weight=sample_weight,
        kl_reduction=kl_reduction,
    )
    return [t.loss for t in terms]
