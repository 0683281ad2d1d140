"""Where each peer's soft target comes from: DML and its online-distillation
family, each one small class.

Every method here trains K peers together without a pre-trained teacher;
they differ only in what peer k mimics. A `Mimicry` gives, for every peer k,
the distributions it mimics with their weights, and the cohort adds

    kl_weight * T^2 * mean over the batch of  sum_{(t, w)} w * KL(sg(t) || p_k)

to peer k's cross-entropy, with p_k = softmax(z_k / T) and sg() stop-gradient.
Training step, logs (`peer{i}_kl`), update orders, distribution, mixed
precision, saving and resume are the same for every method.

Built in (`get(name)`; `NAMES`):

- "pairwise" `Pairwise`: DML (Zhang et al., CVPR 2018).
- "ensemble" `Ensemble`: DML_e, from the same paper.
- "kdcl" `KDCL`: KDCL (Guo et al., CVPR 2020), one teacher from all peers.
- "temporal_mean" `TemporalMean`: each peer mimics the others' weight
  averages (PCL, Wu & Gong, AAAI 2021; mean teacher).
- "codistillation" `Codistillation`: each peer mimics stale copies of the
  others (Anil et al., ICLR 2018).
- "one" `ONE`: the branches of a shared trunk mimic their gated ensemble,
  itself trained with cross-entropy (Lan et al., NeurIPS 2018).
- "okddip" `OKDDip`: auxiliary branches mimic attention-weighted ensembles of
  each other, a group leader branch their mean (Chen et al., AAAI 2020).

A method of your own subclasses `Mimicry` and overrides `targets`:

```python
@keras.saving.register_keras_serializable(package="my_project")
class MeanLogits(keras_dml.mimicry.Mimicry):
    # Every peer mimics the softmax of the peers' mean logits.
    def targets(self, labels, teacher_logits, temperature):
        mean = keras.ops.mean(keras.ops.stack(teacher_logits), axis=0)
        target = keras.ops.log_softmax(mean / temperature, axis=-1)
        return [[(target, 1.0)] for _ in teacher_logits]

model = keras_dml.MutualLearningModel(peers, mimicry=MeanLogits())
```

Arguments of its own go into `__init__` and `get_config`, as for any Keras
layer. A method whose teachers are not the peers themselves overrides
`teacher_logits` too (see `PeerCopies`).
"""

import contextlib
import dataclasses
import inspect
import math

import keras
import numpy as np
from keras import ops

from keras_dml.checks import check_number
from keras_dml.cohort.labels import labeled_mask
from keras_dml.cohort.peer_calls import peer_logits


@dataclasses.dataclass(frozen=True)
class Flag:
    """An argument of a mimicry method that the scripts expose as a flag.

    Attributes:
        argument: the class's keyword argument.
        flag: the setting and flag, `--<flag>` (unique across the methods).
        kind: how the flag parses: "str", "int" or "float".
        help: what it does, for `--help` (the default shown is the class's).
    """

    argument: str
    flag: str
    kind: str
    help: str


@keras.saving.register_keras_serializable(package="keras_dml")
class Mimicry(keras.layers.Layer):
    """Base class of the mimicry methods: each peer's soft targets.

    A Keras layer so that a method's state (e.g. `TemporalMean`'s averaged
    weights) is part of the cohort's weights: saved in `.keras` files and
    checkpoints, restored on resume, placed by the distribution strategy. It
    is never called as a layer.

    Subclasses override `targets`; stateful ones also `setup`, `begin_step`
    and `teacher_logits`.

    Class attributes:
        supports_sequential: whether `update="sequential"` (the paper's
            Algorithm 1: peer k+1 mimics the already-updated peers 1..k)
            means anything for this method; the cohort refuses it otherwise.
        uses_peer_copies: the teachers are copies of the peers kept by the
            method, not the peers' current logits.
        requires_trunk: the method works on a branch cohort only
            (`MutualLearningModel(branches, trunk=...)`), e.g. because its
            teacher reads the trunk's features.
        min_peers: the fewest peers the method works with.
        reads_branch_features: `setup_trunk` and `trained_teachers` get each
            branch's features (the input of its classifier layer) instead of
            the trunk's.
        trained_teachers_loss: how the teachers of `trained_teachers` learn:
            "cross_entropy" (each one a classifier of the labels, as ONE's
            ensemble) or "mimicry" (trained teacher k is peer k's target and
            learns from the same KL, kl_weight * T^2 * KL(q_k || sg(p_k)):
            with the peers' own term, the KL's gradient reaches both of its
            ends, as OKDDip's authors' code does).
        flags: the arguments the scripts expose as flags (`Flag`): declared
            here, with `check_arguments` as their check, they need no other
            edit to appear in every script's `--help`, be checked and saved.
    """

    supports_sequential = True
    uses_peer_copies = False
    requires_trunk = False
    min_peers = 2
    reads_branch_features = False
    trained_teachers_loss = "cross_entropy"
    flags = ()

    @classmethod
    def check_arguments(cls, **arguments):
        """Raises ValueError, naming the argument as `name`, for a value
        `__init__` refuses. The scripts check their flags with it before
        anything runs; a method with arguments overrides it."""
        del arguments

    def __init__(self, **kwargs):
        kwargs.setdefault("name", _default_name(type(self)))
        super().__init__(trainable=False, **kwargs)
        self.built = True  # State, if any, is created by `setup`.

    def setup(self, peers):
        """Creates the method's state over the (built) peers. The cohort
        calls it when its peers are built, possibly more than once: a second
        call for the same peers must change nothing. Stateless methods need
        nothing."""
        del peers

    def begin_step(self, peers, step):
        """Called at the start of every training step, before the peers'
        forward pass: where a stateful method advances its state.

        Args:
            peers: the cohort's peers, as they are before this step.
            step: the number of training steps taken before this one.
        """
        del peers, step

    def setup_trunk(self, features_shape, num_peers):
        """Creates the method's trainable layers for a branch cohort whose
        trunk gives features of `features_shape` (without the batch; with
        `reads_branch_features`, the shape of a branch's features); the
        cohort calls it once, before `compile`. Their variables are
        trained with the trunk, by its optimizer."""
        del features_shape, num_peers

    def trained_teachers(self, features, logits, training=True):
        """Teachers the method trains with the cohort (ONE's gated
        ensemble, OKDDip's attention-weighted ones): their logits, with
        gradients, from the trunk's `features` (with
        `reads_branch_features`, the list of every branch's) and the peers'
        `logits` (with gradients). Each learns as `trained_teachers_loss`
        says, and its gradient reaches the peers, the trunk and the method's
        own layers (the trunk's optimizer updates those). `targets` receives
        them under stop-gradient after the K teachers of `teacher_logits`,
        and gives each an empty target list. Only a branch cohort calls it.
        The default: none."""
        del features, logits, training
        return []

    def teacher_logits(self, peers, inputs, logits, training=True):
        """The K teachers' logits for this batch, under stop-gradient.

        Args:
            peers: the cohort's peers.
            inputs: the batch's inputs.
            logits: the peers' logits on `inputs` (in the sequential order,
                those of the peers as they are at the current peer's turn).
            training: False in evaluation (`evaluate`, validation).

        Returns:
            A list of K tensors [batch, num_classes]; by default the peers'
            own logits.
        """
        del peers, inputs, training
        return [ops.stop_gradient(z) for z in logits]

    def targets(self, labels, teacher_logits, temperature):
        """Every peer's soft targets.

        Args:
            labels: int32 class ids [batch]; < 0 marks an unlabeled example.
            teacher_logits: K float32 tensors [batch, num_classes] (from
                `teacher_logits`), under stop-gradient.
            temperature: the softmax temperature T.

        Returns:
            A list over the K peers; entry k is a list of
            `(target_log_probs [batch, num_classes], weight)` pairs: peer k
            minimises `sum weight * KL(target || softmax(z_k / T))`. A weight
            is a number or a [batch] tensor.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement `targets(labels, "
            "teacher_logits, temperature)`."
        )

    def call(self, *args, **kwargs):
        raise TypeError(
            f"A {type(self).__name__} is not called; pass it to "
            "MutualLearningModel(mimicry=...)."
        )

    def get_config(self):
        return {"name": self.name}


def _default_name(cls):
    for name, known in _BUILT_IN.items():
        if cls is known:
            return name
    return None  # Keras derives one from the class name.


def _soft_log_probs(teacher_logits, temperature):
    return [ops.log_softmax(z / temperature, axis=-1) for z in teacher_logits]


def _pairwise_targets(log_probs):
    num_peers = len(log_probs)
    return [
        [(log_probs[j], 1.0 / (num_peers - 1)) for j in range(num_peers) if j != k]
        for k in range(num_peers)
    ]


@keras.saving.register_keras_serializable(package="keras_dml")
class Pairwise(Mimicry):
    """DML: peer k mimics every other peer, the mean of the pairwise KLs.

        KL term of peer k = 1/(K-1) * sum_{j != k} KL(sg(p_j) || p_k),
        p_j = softmax(z_j / T)

    Reference:
        Zhang, Xiang, Hospedales, Lu. "Deep Mutual Learning". CVPR 2018.
        https://arxiv.org/abs/1706.00384
    """

    def targets(self, labels, teacher_logits, temperature):
        return _pairwise_targets(_soft_log_probs(teacher_logits, temperature))


@keras.saving.register_keras_serializable(package="keras_dml")
class Ensemble(Mimicry):
    """DML_e: peer k mimics the mean of the other peers' distributions.

        KL term of peer k = KL(sg(1/(K-1) * sum_{j != k} p_j) || p_k)

    It trains exactly as `Pairwise`, for any K: with stop-gradient targets
    the gradient of KL(t || p_k) in peer k's logits, (p_k - t) / T, is linear
    in the target t, so the KL to the mean of the targets and the mean of the
    KLs to each have the same gradient. Only the logged KL differs (it is
    smaller). The DML paper reports DML_e doing worse; with this loss a gap
    between the two is run-to-run noise or comes from elsewhere.

    Reference:
        Zhang, Xiang, Hospedales, Lu. "Deep Mutual Learning". CVPR 2018.
    """

    def targets(self, labels, teacher_logits, temperature):
        log_probs = _soft_log_probs(teacher_logits, temperature)
        num_peers = len(log_probs)
        targets = []
        for k in range(num_peers):
            others = ops.stack([lp for j, lp in enumerate(log_probs) if j != k])
            # log(mean_j p_j), in log space.
            mean = ops.logsumexp(others, axis=0) - math.log(num_peers - 1)
            targets.append([(mean, 1.0)])
        return targets


KDCL_VARIANTS = ("min_logit", "naive", "linear", "general")
# Exponentiated-gradient steps that fit KDCL-Linear's weights in each training
# step: for 2-4 peers and random or trained logits, 50 reach the optimum of
# the convex problem to 1e-9 in cross-entropy (SciPy's SLSQP as reference).
KDCL_LINEAR_ITERATIONS = 50


@keras.saving.register_keras_serializable(package="keras_dml")
class KDCL(Mimicry):
    """KDCL: every peer mimics one teacher built from all peers' logits
    (each peer's own included), softened by the temperature.

        KL term of peer k = KL(sg(softmax(z_t / T)) || p_k)

    Teacher logits z_t, per example with label y (the paper's variants):

    - "min_logit" (KDCL-MinLogit): for every class c, the smallest margin to
      the true class over the peers, z_t[c] = min_m (z_m[c] - z_m[y]). So
      z_t[y] = 0, and every other class is as far below the true class as
      the most confident peer puts it.
    - "naive" (KDCL-Naive): the logits of the peer with the lowest
      cross-entropy on this example, z_t = z_m*, m* = argmin_m CE(z_m, y)
      (ties: the lower peer index).

    - "linear" (KDCL-Linear): the convex combination of the peers' logits
      that best predicts the batch's labels, z_t = sum_m w_m z_m with

          w = argmin_{w >= 0, sum_m w_m = 1} mean_b CE(sum_m w_m z_m[b], y_b)

      over the labeled examples of the batch (CE is convex in w). It is
      solved in the step by exponentiated gradient descent on the simplex
      (`KDCL_LINEAR_ITERATIONS` steps of w *= exp(-g / (|g|_max sqrt(t+1))),
      renormalized); w carries no gradient. Unlabeled examples take the
      same weights; a batch without labels, equal ones.

    - "general" (KDCL-General): z_t = sum_m w_m z_m with the weights of the
      generalized ensemble method (Perrone and Cooper, 1993) fitted on
      held-out data: with e_m = softmax(z_m) - onehot(y) per held-out
      example and C_mn = mean(e_m . e_n), w = C^-1 1 / (1^T C^-1 1), the
      weights summing to 1 that minimise the ensemble's squared error there.
      They are state of this layer (saved, resumed), equal until refreshed;
      `RefreshEnsembleWeights(held_out)` refreshes them after every epoch
      (`scripts/train.py` does, on `--validation_size` images held out of the
      training set).

    "min_logit" and "naive" need the label per example: an unlabeled one
    (label < 0) takes the mean of the peers' logits, z_t = 1/K sum_m z_m
    (the linear ensemble with equal weights). "linear" and "general" weigh
    unlabeled examples as the others.

    Not here: the per-peer input distortion: every peer sees the same
    augmented batch, as in DML.

    Args:
        variant: "min_logit", "naive", "linear" or "general".

    Reference:
        Guo, Wang, Wu, Yu, Liang, Hu, Luo. "Online Knowledge Distillation via
        Collaborative Learning". CVPR 2020.
    """

    flags = (
        Flag(
            "variant",
            "kdcl_variant",
            "str",
            "KDCL's teacher: min_logit (per class, the smallest margin to the "
            "true class over the peers), naive (the peer with the lowest "
            "cross-entropy), linear (the convex combination of the peers' "
            "logits with the lowest cross-entropy on the batch) or general "
            "(weights from the peers' error correlation on the --validation_size "
            "images, refitted after every epoch).",
        ),
    )

    @classmethod
    def check_arguments(cls, variant="min_logit", **others):
        super().check_arguments(**others)
        if variant not in KDCL_VARIANTS:
            raise ValueError(
                f"`variant` must be one of {', '.join(KDCL_VARIANTS)}. "
                f"Received: variant={variant}"
            )

    def __init__(self, variant="min_logit", **kwargs):
        self.check_arguments(variant=variant)
        super().__init__(**kwargs)
        self.variant = variant
        if variant == "general":
            self.built = False  # Until `setup` has made the weights.

    def setup(self, peers):
        if self.variant != "general" or self.built:
            return
        self.add_weight(
            shape=(len(peers),),
            initializer=keras.initializers.Constant(1.0 / len(peers)),
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
            name="ensemble_weights",
        )
        self.built = True

    @property
    def ensemble_weights(self):
        """KDCL-General's weights per peer [K] (a variable)."""
        if self.variant != "general":
            raise AttributeError(
                f"Only KDCL('general') keeps ensemble weights; this is "
                f"KDCL({self.variant!r})."
            )
        if not self.weights:
            raise ValueError(
                "KDCL('general') makes its weights when its cohort is built."
            )
        return self.weights[0]

    def refresh(self, peer_logits, labels):
        """Sets KDCL-General's weights from the peers' logits on held-out
        examples (NumPy arrays: K of [n, classes], and [n] labels; unlabeled
        ones are skipped). Returns the weights."""
        weights = general_ensemble_weights(peer_logits, labels)
        if weights is not None:
            self.ensemble_weights.assign(weights.astype("float32"))
        return ops.convert_to_numpy(self.ensemble_weights)

    def teacher(self, labels, teacher_logits):
        """The teacher's logits z_t [batch, num_classes]."""
        safe_labels, mask = labeled_mask(labels)
        stacked = ops.stack(teacher_logits)  # [K, batch, classes]
        if self.variant == "general":
            weights = ops.stop_gradient(ops.convert_to_tensor(self.ensemble_weights))
            return ops.tensordot(ops.cast(weights, stacked.dtype), stacked, axes=1)
        if self.variant == "linear":
            weights = linear_ensemble_weights(stacked, safe_labels, mask)
            return ops.tensordot(ops.cast(weights, stacked.dtype), stacked, axes=1)
        index = safe_labels[None, :, None]
        if self.variant == "min_logit":
            true_logit = ops.take_along_axis(stacked, index, axis=-1)
            labeled = ops.min(stacked - true_logit, axis=0)
        else:
            log_probs = ops.log_softmax(stacked, axis=-1)
            true_log_prob = ops.take_along_axis(log_probs, index, axis=-1)[..., 0]
            best = ops.argmax(true_log_prob, axis=0)  # Lowest CE; first on ties.
            # A one-hot sum picks the peer exactly (a gather along the peer
            # axis makes oneDNN log an int64 warning on some CPUs).
            choice = ops.one_hot(best, len(teacher_logits), axis=0)
            labeled = ops.sum(choice[:, :, None] * stacked, axis=0)
        unlabeled = ops.mean(stacked, axis=0)
        return ops.where(mask[:, None] > 0, labeled, unlabeled)

    def targets(self, labels, teacher_logits, temperature):
        z_t = self.teacher(labels, teacher_logits)
        target = ops.log_softmax(z_t / temperature, axis=-1)
        return [[(target, 1.0)] for _ in teacher_logits]

    def get_config(self):
        return {**super().get_config(), "variant": self.variant}


def linear_ensemble_weights(stacked, labels, mask):
    """KDCL-Linear's weights [K]: on the simplex, minimizing the mean
    cross-entropy of softmax(sum_m w_m z_m) on the examples `mask` marks.

    Args:
        stacked: the peers' logits [K, batch, classes] (not differentiated).
        labels: int class ids [batch], valid where `mask` is 1.
        mask: 1.0 for a labeled example, 0.0 otherwise [batch].
    """
    stacked = ops.stop_gradient(ops.cast(stacked, "float32"))
    mask = ops.cast(mask, "float32")
    one_hot = ops.one_hot(labels, ops.shape(stacked)[-1]) * mask[:, None]
    count = ops.maximum(ops.sum(mask), 1.0)
    num_peers = ops.shape(stacked)[0]

    def step(t, log_w):
        w = ops.softmax(log_w)
        probs = ops.softmax(ops.tensordot(w, stacked, axes=1), axis=-1)
        # d mean CE / d w_m = mean_b sum_c (q - onehot(y))[b, c] z_m[b, c].
        residual = probs * mask[:, None] - one_hot
        grad = ops.sum(residual[None] * stacked, axis=(1, 2)) / count
        # Normalized steps shrinking as 1/sqrt(t + 1): the logits' scale
        # sets no step size, and the iterates settle.
        scale = ops.max(ops.abs(grad)) + 1e-12
        rate = ops.rsqrt(ops.cast(t, "float32") + 1.0)
        return log_w - rate * grad / scale

    log_w = ops.fori_loop(
        0, KDCL_LINEAR_ITERATIONS, step, ops.zeros((num_peers,), "float32")
    )
    return ops.stop_gradient(ops.softmax(log_w))


def general_ensemble_weights(peer_logits, labels):
    """The generalized ensemble method's weights [K] (NumPy, float64), or None
    when no example is labeled or a peer's logits are not finite (a diverged
    run: the NaN stop then ends it): w = C^-1 1 / (1^T C^-1 1), with C the
    correlation of the peers' errors softmax(z_m) - onehot(y) over the
    labeled examples. A ridge of 1e-9 trace(C) / K keeps C invertible when two
    peers err alike; weights may be negative, as the method allows."""
    labels = np.asarray(labels)
    labeled = labels >= 0
    if not labeled.any():
        return None
    stacked = np.stack([np.asarray(z, "float64")[labeled] for z in peer_logits])
    if not np.all(np.isfinite(stacked)):
        return None
    stacked -= stacked.max(axis=-1, keepdims=True)
    probs = np.exp(stacked)
    probs /= probs.sum(axis=-1, keepdims=True)
    errors = probs - np.eye(stacked.shape[-1])[labels[labeled]][None]
    flat = errors.reshape(len(peer_logits), -1)
    correlation = flat @ flat.T / labeled.sum()
    num_peers = len(peer_logits)
    correlation += np.eye(num_peers) * 1e-9 * max(np.trace(correlation), 1e-12)
    solved = np.linalg.solve(correlation, np.ones(num_peers))
    return solved / solved.sum()


class RefreshEnsembleWeights(keras.callbacks.Callback):
    """After every epoch, refits a `KDCL("general")` cohort's ensemble weights
    on held-out data (never the test set: that would tune on it).

    Put it before any checkpoint callback in `fit`'s list, so that a
    checkpoint holds the weights the next epoch trains with.

    Args:
        held_out: a `tf.data.Dataset` or iterable of `(x, y)` batches, or an
            `(x, y)` pair of arrays.
        batch_size: the batch size for an `(x, y)` pair.
    """

    def __init__(self, held_out, batch_size=256):
        super().__init__()
        self.held_out = held_out
        self.batch_size = batch_size

    def _batches(self):
        if isinstance(self.held_out, tuple) and len(self.held_out) == 2:
            x, y = self.held_out
            for start in range(0, len(y), self.batch_size):
                yield (
                    x[start : start + self.batch_size],
                    y[start : start + self.batch_size],
                )
        else:
            for batch in self.held_out:
                yield batch[0], batch[1]

    def on_epoch_end(self, epoch, logs=None):
        mimicry = self.model.mimicry
        if not (isinstance(mimicry, KDCL) and mimicry.variant == "general"):
            raise ValueError(
                "RefreshEnsembleWeights refits KDCL('general')'s weights; this "
                f"cohort's mimicry is {mimicry!r}."
            )
        logits, labels = [], []
        for x, y in self._batches():
            predicted = self.model.predict_on_batch(x)
            logits.append([ops.convert_to_numpy(z) for z in predicted])
            labels.append(np.asarray(ops.convert_to_numpy(y)).reshape(-1))
        peers = [np.concatenate(per_peer) for per_peer in zip(*logits)]
        weights = mimicry.refresh(peers, np.concatenate(labels))
        if logs is not None:
            for k, w in enumerate(weights):
                logs[f"peer{k}_ensemble_weight"] = float(w)


@keras.saving.register_keras_serializable(package="keras_dml")
class PeerCopies(Mimicry):
    """Base of the methods whose teachers are copies of the peers' weights.

    Keeps one copy of every floating-point variable of every peer (weights
    and BatchNorm statistics; integer state such as a dropout seed is the
    peer's own). At the start of each training step, before the peers'
    forward pass, `advance` gives each copy its new value from the peer's
    current one; the teachers' logits are then a training-mode pass of each
    peer with its copy's values (no statistics updated), and peer k mimics
    the other peers' copies as in `Pairwise`:

        KL term of peer k = 1/(K-1) * sum_{j != k} KL(sg(q_j) || p_k),
        q_j = softmax(f(x; copy of peer j) / T)

    The copies are variables of this layer: saved with the cohort, in every
    checkpoint, and restored on resume, so a resumed run continues bit for
    bit. They cost one more forward pass per peer per step, without a
    backward pass, and the memory of the peers' weights once more.

    The teachers do not change while the peers are updated within a step, so
    the sequential order would give the simultaneous result at a higher
    cost: these methods take `update="simultaneous"` only.
    """

    supports_sequential = False
    uses_peer_copies = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built = False  # Until `setup` has made the copies.
        self._layout = None

    def setup(self, peers):
        if self._layout is not None:
            sizes = [
                len(p.trainable_variables) + len(p.non_trainable_variables)
                for p in peers
            ]
            if [len(group) for group in self._layout] != sizes:
                raise ValueError(
                    f"This {type(self).__name__} already holds copies of another "
                    "cohort's peers; give each MutualLearningModel its own."
                )
            return
        layout = []
        for k, peer in enumerate(peers):
            group = []
            variables = [*peer.trainable_variables, *peer.non_trainable_variables]
            for i, variable in enumerate(variables):
                if not _is_float(variable):
                    group.append(None)
                    continue
                self.add_weight(
                    shape=variable.shape,
                    dtype=variable.dtype,
                    initializer=_current_value_of(variable),
                    trainable=False,
                    autocast=False,
                    # Every replica computes the same value.
                    aggregation="only_first_replica",
                    name=f"peer{k}_copy{i}",
                )
                group.append(len(self.weights) - 1)
            layout.append(tuple(group))
        # Indices into `self.weights`: a list of variables here would be
        # tracked a second time.
        self._layout = tuple(layout)
        self.built = True

    def copies(self, k):
        """Peer k's copies, in the order of its trainable then non-trainable
        variables (None where the peer's own variable is used)."""
        if self._layout is None:
            raise ValueError(
                f"{type(self).__name__} has no copies yet: the cohort makes them "
                "once its peers are built."
            )
        weights = self.weights
        return [None if i is None else weights[i] for i in self._layout[k]]

    def advance(self, copy, current, step):
        """A copy's new value at the start of training step `step` (0-based),
        from its old value and the peer's current one."""
        raise NotImplementedError

    def begin_step(self, peers, step):
        for k, peer in enumerate(peers):
            variables = [*peer.trainable_variables, *peer.non_trainable_variables]
            for variable, copy in zip(variables, self.copies(k)):
                if copy is not None:
                    current = ops.stop_gradient(variable.value)
                    copy.assign(self.advance(copy.value, current, step))

    def teacher_logits(self, peers, inputs, logits, training=True):
        """The copies' logits, in the mode of the step.

        In evaluation the copies run in inference mode, so the validation
        `peer{i}_kl` is each peer's KL to the other peers' copies.
        """
        del logits
        teachers = []
        for k, peer in enumerate(peers):
            variables = [*peer.trainable_variables, *peer.non_trainable_variables]
            values = [
                variable.value if copy is None else copy.value
                for variable, copy in zip(variables, self.copies(k))
            ]
            split = len(peer.trainable_variables)
            teachers.append(
                peer_logits(peer, inputs, values[:split], values[split:], training)
            )
        return teachers

    def targets(self, labels, teacher_logits, temperature):
        return _pairwise_targets(_soft_log_probs(teacher_logits, temperature))

    @contextlib.contextmanager
    def peers_as_copies(self, peers):
        """Within the block, every peer holds its copy's values; its own are
        put back afterwards (also after an error)."""
        saved = []
        try:
            for k, peer in enumerate(peers):
                variables = [*peer.trainable_variables, *peer.non_trainable_variables]
                for variable, copy in zip(variables, self.copies(k)):
                    if copy is not None:
                        saved.append((variable, variable.numpy()))
                        variable.assign(copy.value)
            yield peers
        finally:
            for variable, value in saved:
                variable.assign(value)


def _current_value_of(variable):
    """An initializer giving `variable`'s value when the copy is created
    (also when that happens while the first training step is traced)."""

    def initializer(shape, dtype):
        # A copy: on JAX an unchanged array is the same buffer, which the
        # step's donated state must not hold twice.
        return ops.copy(ops.cast(ops.reshape(variable.value, shape), dtype))

    return initializer


def _is_float(variable):
    return "float" in str(variable.dtype)


@keras.saving.register_keras_serializable(package="keras_dml")
class TemporalMean(PeerCopies):
    """Temporal mean teachers: peer k mimics the other peers' exponential
    moving averages of their weights.

    Each peer j keeps w_ema_j, updated at the start of every training step t
    (0-based) from the peer's current weights w_j:

        w_ema_j <- a_t * w_ema_j + (1 - a_t) * w_j,
        a_t = min(decay, 1 - 1 / (t + 1))

    The ramp of a_t is mean teacher's: the first step copies the weights and
    early averages are plain means, so a young average is not dominated by
    the random initialization. The teacher of step t is therefore the average
    of the weights after steps 0..t-1, as in mean teacher; the averaged peers
    after training include every update but the last.

    The averages are often better models than the peers: export them with
    `keras_dml.export.export_peers(model, ..., use_averaged=True)`, or use
    them in a block `with model.mimicry.peers_as_copies(model.peers):`.

    Args:
        decay: the averaging decay in [0, 1); the teachers average over
            roughly the last 1 / (1 - decay) steps.

    References:
        Wu, Gong. "Peer Collaborative Learning for Online Knowledge
        Distillation". AAAI 2021. https://arxiv.org/abs/2006.04147
        Tarvainen, Valpola. "Mean teachers are better role models". NeurIPS
        2017. https://arxiv.org/abs/1703.01780
    """

    flags = (
        Flag(
            "decay",
            "teacher_decay",
            "float",
            "Decay of the weight averages the peers mimic; they average over "
            "about 1 / (1 - decay) steps (at 1 they would never move).",
        ),
    )

    def __init__(self, decay=0.999, **kwargs):
        self.check_arguments(decay=decay)
        super().__init__(**kwargs)
        self.decay = float(decay)

    @classmethod
    def check_arguments(cls, decay=0.999, **others):
        super().check_arguments(**others)
        check_number("`decay`", decay, 0, 1, high_open=True)

    def advance(self, copy, current, step):
        step = ops.cast(step, "float32")
        rate = ops.minimum(self.decay, 1.0 - 1.0 / (step + 1.0))
        rate = ops.cast(rate, current.dtype)
        return rate * copy + (1 - rate) * current

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}


@keras.saving.register_keras_serializable(package="keras_dml")
class Codistillation(PeerCopies):
    """Codistillation: peer k mimics stale copies of the other peers,
    refreshed every `refresh_steps` training steps.

        copy_j <- w_j at the start of steps 0, N, 2N, ...

    With N = 1 the copies are the peers themselves and this is DML
    (`Pairwise`), bit for bit on peers without dropout.

    Multi-worker training: in the paper each peer is trained by its own
    group of workers on its own data, and only weights cross between the
    groups, every N steps (a checkpoint the other groups load), which is
    what makes the exchange cheap. Here the whole cohort is data-parallel:
    every replica holds every peer and the copies, and a refresh is a local
    copy. The math is codistillation's with the peers fed the same batches;
    the cost of distillation is one forward pass of the copies per step,
    whatever N is.

    Args:
        refresh_steps: N >= 1, the steps between refreshes.

    Reference:
        Anil, Pereyra, Passos, Ormandi, Dahl, Hinton. "Large scale distributed
        neural network training through online distillation". ICLR 2018.
        https://arxiv.org/abs/1804.03235
    """

    flags = (
        Flag(
            "refresh_steps",
            "refresh_steps",
            "int",
            "Steps between refreshes of the stale copies the peers mimic (1 is DML).",
        ),
    )

    def __init__(self, refresh_steps=100, **kwargs):
        self.check_arguments(refresh_steps=refresh_steps)
        super().__init__(**kwargs)
        self.refresh_steps = int(refresh_steps)

    @classmethod
    def check_arguments(cls, refresh_steps=100, **others):
        super().check_arguments(**others)
        check_number("`refresh_steps`", refresh_steps, 1, integer=True)

    def advance(self, copy, current, step):
        refresh = ops.equal(ops.mod(step, self.refresh_steps), 0)
        return ops.where(refresh, current, copy)

    def get_config(self):
        return {**super().get_config(), "refresh_steps": self.refresh_steps}


@keras.saving.register_keras_serializable(package="keras_dml")
class ONE(Mimicry):
    """ONE, On-the-fly Native Ensemble: the branches of a shared trunk
    mimic their gated ensemble, which is trained as a classifier too.

        g = softmax(ReLU(BN(W_g pool(f) + b_g)))     (one gate per branch)
        z_e = sum_i g_i z_i
        L = sum_i [CE(y, z_i) + kl_weight * T^2 * KL(sg(softmax(z_e / T)) || p_i)]
            + CE(y, z_e)

    f are the trunk's features (globally average-pooled when they are a
    feature map), z_i branch i's logits. The gate is a dense layer, BatchNorm
    and ReLU before the softmax, as in the authors' code; it and the
    ensemble's cross-entropy train with the trunk (the ensemble's gradient
    reaches the branches and the trunk too); the KL's target is under
    stop-gradient, as in the authors' code (`target.data`). The paper uses
    T = 3 and three branches of a ResNet's last stage
    (`keras_dml.models.resnet_cifar_branches`). `targets` gives every
    branch the same target, so `kl_reduction` changes nothing.

    For a branch cohort only (`MutualLearningModel(branches, trunk=...)`),
    simultaneous order only.

    Reference:
        Lan, Zhu, Gong. "Knowledge Distillation by On-the-Fly Native
        Ensemble". NeurIPS 2018. https://arxiv.org/abs/1806.04606
    """

    supports_sequential = False
    requires_trunk = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trainable = True  # Its gate is trained (the base is frozen).
        self.gate = None
        self.gate_norm = None

    def setup_trunk(self, features_shape, num_peers):
        if self.gate is not None:
            if self.gate.units != num_peers:
                raise ValueError(
                    "This ONE already gates another cohort's branches; give "
                    "each MutualLearningModel its own."
                )
            return
        self.gate = keras.layers.Dense(num_peers, name="gate")
        self.gate_norm = keras.layers.BatchNormalization(name="gate_norm")
        channels = features_shape[-1]
        self.gate.build((None, channels))
        self.gate_norm.build((None, num_peers))

    def _check_built(self):
        if self.gate is None:
            raise ValueError(
                "ONE has no gate yet: it is built by a branch cohort, "
                "MutualLearningModel(branches, trunk=trunk, mimicry='one')."
            )

    def gates(self, features, training=True):
        """[batch, K] weights of the branches, summing to 1."""
        self._check_built()
        features = ops.cast(features, "float32")
        if len(features.shape) > 2:
            features = ops.mean(features, axis=tuple(range(1, len(features.shape) - 1)))
        scores = self.gate_norm(self.gate(features), training=training)
        return ops.softmax(ops.relu(scores), axis=-1)

    def trained_teachers(self, features, logits, training=True):
        gates = self.gates(features, training)
        stacked = ops.stack([ops.cast(z, "float32") for z in logits], axis=1)
        return [ops.sum(gates[:, :, None] * stacked, axis=1)]

    def targets(self, labels, teacher_logits, temperature):
        # teacher_logits: the K branches', then the gated ensemble's (and a
        # static teacher's, if any, which ONE does not use).
        self._check_built()
        num_peers = self.gate.units
        ensemble = ops.log_softmax(teacher_logits[num_peers] / temperature, axis=-1)
        targets = [[(ensemble, 1.0)] for _ in range(num_peers)]
        return targets + [[] for _ in teacher_logits[num_peers:]]


@keras.saving.register_keras_serializable(package="keras_dml")
class OKDDip(Mimicry):
    """OKDDip, Online Knowledge Distillation with Diverse Peers: two-level
    distillation among the K >= 3 branches of a shared trunk. Branches
    0..K-2 are auxiliary peers, each with its own attention-weighted
    ensemble of the auxiliary peers as target; branch K-1 is the group
    leader, the model used for inference, which mimics their plain mean.

        q_a = W_q h_a,  k_b = W_k h_b      (W_q, W_k shared, no bias)
        alpha_ab = softmax_b(q_a . k_b)    (over the auxiliary peers, a too)
        t_a = sum_b alpha_ab z_b           (auxiliary peer a's target logits)
        t_L = mean_b z_b                   (the leader's)
        L = sum_k [CE(y, z_k) + kl_weight * T^2 * KL(softmax(t_k / T) || p_k)]

    h_b is branch b's feature vector (the input of its classifier layer,
    globally average-pooled when it is a feature map), z_b its logits and
    p_k = softmax(z_k / T). As in the authors' code (`train_GL.py`) the
    targets are not detached: the KL's gradient also trains W_q and W_k
    (which have no other loss) and reaches the branches through t_k. The
    cohort computes it as two terms, the peer's KL to its target under
    stop-gradient (logged as `peer{k}_kl`) and the same KL with the peer's
    side under stop-gradient (`trained_teachers_loss = "mimicry"`); their
    sum's gradient is that of the authors' loss. The attention's softmax
    runs over every auxiliary peer, a included, as in the authors' code.
    The paper uses T = 3, four branches of a ResNet's last stage
    (`keras_dml.models.resnet_cifar_branches(4)`) and the sigmoid ramp-up
    of the distillation weight over 80 epochs (`kl_ramp_up_steps`).

    Args:
        projection_dim: the size of the queries and keys (None: the
            features' size // 8, the authors' factor, at least 1).

    For a branch cohort of at least 3 branches whose branches are
    functional models ending in their classifier layer, simultaneous order
    only.

    Reference:
        Chen, Mei, Wang, Feng, Chen. "Online Knowledge Distillation with
        Diverse Peers". AAAI 2020. https://arxiv.org/abs/1912.00350
    """

    supports_sequential = False
    requires_trunk = True
    min_peers = 3
    reads_branch_features = True
    trained_teachers_loss = "mimicry"
    flags = (
        Flag(
            "projection_dim",
            "okddip_projection_dim",
            "int",
            "Size of OKDDip's attention queries and keys (none: the branch "
            "features' size // 8, the authors' factor).",
        ),
    )

    def __init__(self, projection_dim=None, **kwargs):
        self.check_arguments(projection_dim=projection_dim)
        super().__init__(**kwargs)
        self.trainable = True  # Its projections are trained (the base is frozen).
        self.projection_dim = projection_dim
        self.query = None
        self.key = None
        self._num_peers = None

    @classmethod
    def check_arguments(cls, projection_dim=None, **others):
        super().check_arguments(**others)
        if projection_dim is not None:
            check_number("`projection_dim`", projection_dim, 1, integer=True)

    def setup_trunk(self, features_shape, num_peers):
        if num_peers < self.min_peers:
            raise ValueError(
                "OKDDip needs at least 3 branches: 2 or more auxiliary peers "
                f"and the group leader (the last). Received: {num_peers} branches."
            )
        if self.query is not None:
            if self._num_peers != num_peers:
                raise ValueError(
                    "This OKDDip already weighs another cohort's branches; "
                    "give each MutualLearningModel its own."
                )
            return
        channels = features_shape[-1]
        size = self.projection_dim or max(1, channels // 8)
        self._num_peers = num_peers
        self.query = keras.layers.Dense(size, use_bias=False, name="query")
        self.key = keras.layers.Dense(size, use_bias=False, name="key")
        self.query.build((None, channels))
        self.key.build((None, channels))

    def attention(self, features):
        """[batch, A, A] weights alpha_ab of the A = K - 1 auxiliary peers
        (rows sum to 1), from every branch's `features` (the leader's are
        not read)."""
        self._check_built()
        pooled = []
        for h in features[:-1]:
            h = ops.cast(h, "float32")
            if len(h.shape) > 2:
                h = ops.mean(h, axis=tuple(range(1, len(h.shape) - 1)))
            pooled.append(h)
        stacked = ops.stack(pooled, axis=1)  # [batch, A, C]
        queries = ops.cast(self.query(stacked), "float32")
        keys = ops.cast(self.key(stacked), "float32")
        energy = ops.matmul(queries, ops.transpose(keys, (0, 2, 1)))
        return ops.softmax(energy, axis=-1)

    def trained_teachers(self, features, logits, training=True):
        del training  # The attention has no layer that differs in inference.
        auxiliary = ops.stack([ops.cast(z, "float32") for z in logits[:-1]], axis=1)
        weighted = ops.matmul(self.attention(features), auxiliary)  # [batch, A, N]
        num_auxiliary = len(logits) - 1
        return [weighted[:, a] for a in range(num_auxiliary)] + [
            ops.mean(auxiliary, axis=1)
        ]

    def targets(self, labels, teacher_logits, temperature):
        # teacher_logits: the K branches', then the K trained targets (and a
        # static teacher's, if any, which OKDDip does not use).
        self._check_built()
        num_peers = self._num_peers
        trained = teacher_logits[num_peers : 2 * num_peers]
        targets = [[(ops.log_softmax(t / temperature, axis=-1), 1.0)] for t in trained]
        return targets + [[] for _ in teacher_logits[num_peers:]]

    def _check_built(self):
        if self.query is None:
            raise ValueError(
                "OKDDip has no attention yet: it is built by a branch cohort, "
                "MutualLearningModel(branches, trunk=trunk, mimicry='okddip')."
            )

    def get_config(self):
        return {**super().get_config(), "projection_dim": self.projection_dim}


_BUILT_IN = {
    "pairwise": Pairwise,
    "ensemble": Ensemble,
    "kdcl": KDCL,
    "temporal_mean": TemporalMean,
    "codistillation": Codistillation,
    "one": ONE,
    "okddip": OKDDip,
}
NAMES = tuple(_BUILT_IN)


def flags():
    """`[(method name, Flag)]` of every built-in method's flag arguments."""
    return [(name, flag) for name, cls in _BUILT_IN.items() for flag in cls.flags]


def class_of(name):
    """The class of the built-in method `name`."""
    return _BUILT_IN[name]


def default_of(name, argument):
    """The default of `argument` in method `name`'s `__init__`."""
    return inspect.signature(_BUILT_IN[name].__init__).parameters[argument].default


def get(identifier, **arguments):
    """A `Mimicry` from a name of `NAMES` (with the method's `arguments`), a
    serialized config, or a `Mimicry` (returned as it is).

    Raises:
        ValueError: an unknown name or another kind of value.
    """
    if isinstance(identifier, Mimicry):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str) and identifier in _BUILT_IN:
        return _BUILT_IN[identifier](**arguments)
    raise ValueError(
        f"`mimicry` must be one of {NAMES} or a keras_dml.mimicry.Mimicry. "
        f"Received: mimicry={identifier!r}"
    )


def name_of(mimicry):
    """The registry name of a built-in method, else the class name."""
    for name, cls in _BUILT_IN.items():
        if type(mimicry) is cls:
            return name
    return type(mimicry).__name__
