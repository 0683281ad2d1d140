"""`MutualLearningModel`: a cohort of peers trained by Deep Mutual Learning."""

import copy
import inspect
import math
import operator
import threading

import keras
import numpy as np
from keras import ops

from keras_dml.cohort import kl_ramp
from keras_dml.cohort import losses as dml_losses
from keras_dml.cohort import mimicry as mimicry_methods
from keras_dml.cohort.checked_batches import CheckedPyDataset
from keras_dml.cohort.fit_callbacks import with_cohort_callbacks
from keras_dml.cohort.keras_internals import (
    all_layers,
    keras_tensor_producer,
    optimizer_built_for,
)
from keras_dml.cohort.labels import check_host_labels, label_errors
from keras_dml.cohort.metrics import CohortMetrics
from keras_dml.cohort.peer_calls import split_peer_output
from keras_dml.cohort.peer_optimizers import PeerOptimizers
from keras_dml.cohort.steps import SUPPORTED_BACKENDS, CohortSteps

UPDATE_MODES = ("simultaneous", "sequential")


def _symbolic_output(peer):
    """The peer's symbolic output when its graph is known, else None."""
    try:
        return peer.output
    except (AttributeError, ValueError):
        pass
    try:  # A Sequential built with an Input has `outputs` but no `output`.
        outputs = peer.outputs
    except (AttributeError, ValueError):
        return None
    return outputs[0] if outputs and len(outputs) == 1 else None


def _output_size(peer):
    """The peer's number of classes when its graph is known, else None."""
    output = _symbolic_output(peer)
    if output is None:
        return getattr(peer, "num_classes", None)
    logits, _ = split_peer_output(output, peer.name)
    return logits.shape[-1]


_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


def _activation_name(layer):
    """The name of `layer`'s activation if it gives probabilities ("softmax",
    "sigmoid"), else None."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return name if name in _PROBABILITY_ACTIVATIONS else None


def _final_activation(peer, tensor=None):
    """The probability activation ("softmax"/"sigmoid") that produces the
    peer's logits, looking into nested models; None if there is none or the
    graph is unknown."""
    if tensor is None:
        output = _symbolic_output(peer)
        if output is None:
            return None
        tensor, _ = split_peer_output(output, peer.name)
    layer = keras_tensor_producer(tensor)
    if layer is None:
        return None
    if isinstance(layer, keras.Model):
        return _final_activation(layer)
    return _activation_name(layer)


def _check_logits(peers):
    for i, peer in enumerate(peers):
        activation = _final_activation(peer)
        if activation is not None:
            raise ValueError(
                f"Peer {i} ({peer.name!r}) ends in a {activation}: it returns "
                "probabilities, but a MutualLearningModel peer must return "
                "logits (its losses apply the softmax themselves; probabilities "
                "read as logits train to nothing). For a keras.applications "
                "model pass `classifier_activation=None`; otherwise drop the "
                "final activation."
            )


def _check_backend():
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            "MutualLearningModel trains on Keras's TensorFlow, JAX and PyTorch "
            f"backends; this process uses {backend!r} (KERAS_BACKEND). Set "
            "KERAS_BACKEND=tensorflow, jax or torch before Keras is imported."
        )


def _validate_peers(peers, teacher=None):
    fewest = 1 if teacher is not None else 2
    if isinstance(peers, keras.layers.Layer) or not isinstance(peers, (list, tuple)):
        raise ValueError(
            f"`peers` must be a list of at least {fewest} Keras models. "
            f"Received: peers={peers!r}"
        )
    peers = list(peers)
    if len(peers) < fewest:
        raise ValueError(
            "Mutual learning needs a cohort of at least 2 peers (or 1 student "
            "and a `teacher`). Received: "
            f"{len(peers)} peer(s): {[getattr(p, 'name', p) for p in peers]}"
        )
    for i, peer in enumerate(peers):
        if not isinstance(peer, keras.layers.Layer):
            raise ValueError(
                f"Every peer must be a Keras model. Received at index {i}: {peer!r}"
            )
    seen = {}
    for i, peer in enumerate(peers):
        if id(peer) in seen:
            raise ValueError(
                f"Peer {peer.name!r} appears twice (indices {seen[id(peer)]} and "
                f"{i}). Each peer must be a distinct model: one object twice "
                "would be one network updated twice, not a cohort."
            )
        seen[id(peer)] = i
    _check_logits(peers)
    sizes = {peer.name: _output_size(peer) for peer in peers}
    _check_sizes(sizes)
    known = {size for size in sizes.values() if size is not None}
    owners = {}
    for i, peer in enumerate(peers):
        for v in peer.weights:
            j = owners.setdefault(id(v), i)
            if j != i:
                raise ValueError(
                    f"Peers {peers[j].name!r} and {peer.name!r} share the "
                    f"variable {v.path!r}. Peers must not share weights: each "
                    "peer's optimizer would update them."
                )
    return peers, (known.pop() if known else None)


def _validate_teacher(teacher, peers, num_classes):
    """`teacher`, checked: a built Keras model returning logits over the
    peers' `num_classes`, not a peer, sharing no weights with them."""
    if teacher is None:
        return None
    if not isinstance(teacher, keras.Model):
        raise ValueError(
            "`teacher` must be a pre-trained Keras model returning logits. "
            f"Received: teacher={teacher!r}"
        )
    if not teacher.built:
        raise ValueError(
            f"`teacher` ({teacher.name!r}) is not built: a static teacher is a "
            "pre-trained model (build, train or load it first)."
        )
    if any(teacher is peer for peer in peers):
        raise ValueError(
            f"`teacher` ({teacher.name!r}) is also a peer: a static teacher is "
            "frozen, a peer is trained."
        )
    activation = _final_activation(teacher)
    if activation is not None:
        raise ValueError(
            f"`teacher` ({teacher.name!r}) ends in a {activation}: it must "
            "return logits, as the peers do."
        )
    _check_sizes(
        {f"teacher {teacher.name}": _output_size(teacher), "peers": num_classes}
    )
    peer_variables = {id(v) for peer in peers for v in peer.weights}
    shared = [v.path for v in teacher.weights if id(v) in peer_variables]
    if shared:
        raise ValueError(
            f"`teacher` ({teacher.name!r}) shares the variable {shared[0]!r} with "
            "a peer; the peer's optimizer would change the teacher."
        )
    return teacher


def _validate_trunk(trunk, branches, update):
    """`trunk`, checked: a Keras model with one `Input`, sharing no weights
    with the branches, in a cohort trained in the simultaneous order."""
    if trunk is None:
        return None
    if not isinstance(trunk, keras.Model):
        raise ValueError(
            "`trunk` must be a Keras model (the lower stages every branch "
            f"shares). Received: trunk={trunk!r}"
        )
    try:
        inputs = trunk.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs or len(inputs) != 1:
        raise ValueError(
            f"`trunk` ({trunk.name!r}) must be a functional or Sequential model "
            "with one `keras.Input`: its input shape builds each peer as "
            "trunk + branch, the standalone model that is exported."
        )
    if any(trunk is branch for branch in branches):
        raise ValueError(f"`trunk` ({trunk.name!r}) is also one of the branches.")
    branch_variables = {id(v) for branch in branches for v in branch.weights}
    shared = [v.path for v in trunk.weights if id(v) in branch_variables]
    if shared:
        raise ValueError(
            f"`trunk` ({trunk.name!r}) shares the variable {shared[0]!r} with a "
            "branch: the branches must hold only their own layers."
        )
    if update != "simultaneous":
        raise ValueError(
            "A cohort with a shared `trunk` trains in update='simultaneous' "
            "only: the trunk's gradient is the sum of every branch's loss "
            "(as in ONE, OKDDip and PCL), which the sequential order, one "
            f"peer's update after another's, has no place for. Received: "
            f"update={update!r}"
        )
    return trunk


def _branch_peers(trunk, branches):
    """Each branch on the trunk as a standalone functional model (sharing
    the trunk's and the branch's layers): what `model.peers` holds, what is
    evaluated per peer and exported."""
    spec = trunk.inputs[0]
    peers = []
    for i, branch in enumerate(branches):
        inputs = keras.Input(shape=spec.shape[1:], dtype=spec.dtype, name="inputs")
        features = trunk(inputs)
        try:
            outputs = branch(features)
        except Exception as error:
            raise ValueError(
                f"Branch {i} ({branch.name!r}) cannot take the trunk's output "
                f"(shape {tuple(features.shape)}): {error}"
            ) from error
        peers.append(keras.Model(inputs, outputs, name=f"{trunk.name}_{branch.name}"))
    return peers


class _Untracked:
    """Holds objects out of Keras's tracking (a sequence of them)."""

    def __init__(self, items):
        self._items = tuple(items)

    def __iter__(self):
        return iter(self._items)

    def __getitem__(self, index):
        return self._items[index]


def _branch_feature_readers(branches, mimicry):
    """Each branch as a model returning `[logits, features]`, the features
    being the input of the layer that gives its logits (sharing the
    branch's layers): for a method that reads the branches' features."""
    name = mimicry_methods.name_of(mimicry)
    readers = []
    for i, branch in enumerate(branches):
        try:
            outputs = branch.outputs
        except (AttributeError, ValueError):
            outputs = None
        last = branch.layers[-1] if outputs and branch.layers else None
        if (
            not outputs
            or len(outputs) != 1
            or last is None
            or last.output is not outputs[0]
            or isinstance(last.input, (list, tuple, dict))
        ):
            raise ValueError(
                f"mimicry={name!r} reads each branch's features, the input of "
                f"its classifier: branch {i} ({branch.name!r}) must be a "
                "functional or Sequential model whose last layer returns its "
                "logits from one input."
            )
        readers.append(
            keras.Model(
                branch.inputs, [outputs[0], last.input], name=f"{branch.name}_reader"
            )
        )
    return readers


def _is_seed_state(variable):
    return variable.path.endswith("seed_generator_state")


def _validate_peer_distortion(distortion, trunk, update, mimicry):
    """`peer_distortion` works where each peer's forward pass is its own
    and runs once per step."""
    if distortion is None:
        return
    if not isinstance(distortion, keras.layers.Layer):
        raise ValueError(
            "`peer_distortion` must be a Keras layer (e.g. a keras.Sequential "
            "of random preprocessing layers) that each peer's training batch "
            f"goes through. Received: peer_distortion={distortion!r}"
        )
    reasons = []
    if trunk is not None:
        reasons.append("a shared `trunk` runs once, on one view of the batch")
    if update != "simultaneous":
        reasons.append(
            "update='sequential' recomputes each updated peer's predictions, "
            "which would need its view again"
        )
    if mimicry.uses_peer_copies:
        reasons.append(
            f"mimicry={mimicry_methods.name_of(mimicry)!r} runs copies of the "
            "peers, whose view is not defined"
        )
    if reasons:
        raise ValueError(
            "`peer_distortion` gives each peer its own view of the batch in "
            "the simultaneous step; it is not supported here: "
            + "; ".join(reasons)
            + "."
        )


def _check_sizes(sizes):
    """`sizes`: peer name -> number of classes (None: unknown yet)."""
    if len({size for size in sizes.values() if size is not None}) > 1:
        raise ValueError(
            "All peers must predict the same number of classes. "
            f"Received output sizes: {sizes}"
        )


def _uses_float16(peer):
    return any(
        getattr(layer, "compute_dtype", None) == "float16" for layer in all_layers(peer)
    )


@keras.saving.register_keras_serializable(package="keras_dml")
class MutualLearningModel(CohortSteps, keras.Model):
    """A cohort of K >= 2 peer networks trained together by Deep Mutual Learning.

    Each peer k minimises its own loss

        L_k = CE(y, softmax(z_k))
              + kl_weight * T^2 * 1/(K-1) * sum_{j != k} KL(sg(p_j) || p_k),

    p_j = softmax(z_j / T), with its own optimizer over its own weights; the
    other peers' predictions are fixed targets (stop-gradient). Peers can be
    any Keras models mapping the same inputs to logits over the same classes
    (or to a dict with "logits", see `split_peer_output`). Each peer's own
    regularization losses (`peer.losses`) are added to its loss.

    `model(x)` returns the list of the peers' logits. Training logs `loss` (sum
    over peers) and, per peer i, `peer{i}_loss`, `peer{i}_ce`, `peer{i}_kl`,
    `peer{i}_<metric>`, plus `ensemble_<metric>` on the averaged probabilities,
    each peer's mean posterior entropy `peer{i}_entropy` and the peers' top-1
    `agreement` (over pairs of peers).

    Args:
        peers: list of K >= 2 distinct Keras models producing logits
            [batch, num_classes], with no weights in common.
        kl_weight: weight of the mimicry term; 0 trains every peer
            independently in the same loop (the baseline).
        temperature: softmax temperature T of the mimicry term.
        mimicry: what each peer mimics: a name ("pairwise", the paper's DML:
            mean of the pairwise KLs; "ensemble", the paper's DML_e: KL to
            the other peers' mean; "kdcl"; "temporal_mean";
            "codistillation"; for branch cohorts "one" and "okddip") or a
            `keras_dml.mimicry.Mimicry`, built in or
            your own (see `keras_dml.mimicry`). `model.mimicry` is the
            object.
        update: "simultaneous" (one forward pass of every peer, all peers
            updated from it) or "sequential" (the paper's Algorithm 1: peer k+1
            mimics the already-updated peers 1..k on the same mini-batch).
        label_smoothing: label smoothing of the CE term (0.1 in the official
            Market-1501 code).
        kl_reduction: "mean" (default, the paper's 1/(K-1) average of the KL
            to the other peers) or "sum" (their sum, as the official DML code
            adds them; the same for K=2). See `keras_dml.losses`.
        aux_loss_weight: weight of the cross-entropy of a peer's auxiliary
            classifiers, for peers that return {"logits", "aux_logits"}
            (0.3 as in GoogLeNet). Auxiliary logits take no part in mimicry.
        teacher: a pre-trained Keras model returning logits over the same
            classes (offline distillation, the paper's comparison). It is
            frozen: called in inference mode (its BatchNorm statistics stay
            as they are), never updated, with no optimizer, and it is not a
            peer in `model.peers`, the logs, the metrics or the export (it
            is saved with the cohort, so `.keras` files and checkpoints
            restore it). The mimicry method treats it as one more member
            whose predictions every peer mimics: with "pairwise", peer k's
            KL term averages over the K - 1 other peers and the teacher.
            With one peer this is Hinton et al.'s knowledge distillation,
            `CE + kl_weight * T^2 * KL(sg(p_teacher) || p_student)`.
        kl_ramp_up_steps, kl_burn_in_steps, kl_ramp_shape: a schedule of
            the mimicry weight over optimizer steps (`keras_dml.cohort.kl_ramp`):
            0 for the first `kl_burn_in_steps`, then rising to `kl_weight`
            over `kl_ramp_up_steps` ("sigmoid": exp(-5 (1 - u)^2), as mean
            teacher and ONE; or "linear"). Both 0 (the default): no ramp.
        **kwargs: passed to `keras.Model` (e.g. `name`).

        trunk: a Keras model with one `Input` (the lower stages of one
            network) that every peer shares: then `peers` are the branches
            (heads), each a model taking the trunk's output. The trunk runs
            once per step; its gradient is the sum of every branch's loss
            (ONE, OKDDip, PCL), and it has an optimizer of its own, after the
            peers' (`model.trunk_optimizer`). `model.peers` are then
            the standalone models trunk + branch (sharing the layers), which
            are evaluated, analysed and exported as any peer;
            `model.branches` are the heads. Simultaneous order only, and no
            float16 (one loss scale per peer would scale the trunk's summed
            gradient unevenly; bfloat16 works).
        peer_distortion: a Keras layer (random preprocessing, e.g.
            `keras.Sequential([keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomTranslation(0.1, 0.1)])`) that every peer's
            training batch goes through, drawn anew for each peer: each
            peer sees its own distortion of the images, as in KDCL (Guo et
            al., CVPR 2020), whose ensemble teacher combines the peers'
            predictions on their different views. Evaluation and the
            teachers of a static `teacher` see the batch as it is. Its
            random state is saved with the cohort (exact resume).
            Simultaneous order, separate peers and methods without copies
            only.

    Labels are integer class ids; a label < 0 marks an unlabeled example, which
    contributes only the KL term (semi-supervised DML).

    Example:

    ```python
    peers = [keras_dml.models.resnet32(num_classes=100) for _ in range(2)]
    model = keras_dml.MutualLearningModel(peers, kl_weight=1.0)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        metrics=["accuracy"],
    )
    model.fit(train_ds, validation_data=test_ds, epochs=200)
    ```

    Reference:
        Zhang, Xiang, Hospedales, Lu. "Deep Mutual Learning". CVPR 2018.
        https://arxiv.org/abs/1706.00384
    """

    def __init__(
        self,
        peers,
        *,
        kl_weight=1.0,
        temperature=1.0,
        mimicry="pairwise",
        update="simultaneous",
        label_smoothing=0.0,
        aux_loss_weight=0.3,
        teacher=None,
        kl_ramp_up_steps=0,
        kl_burn_in_steps=0,
        kl_ramp_shape="sigmoid",
        kl_reduction="mean",
        trunk=None,
        peer_distortion=None,
        **kwargs,
    ):
        _check_backend()
        peers, num_classes = _validate_peers(peers, teacher)
        trunk = _validate_trunk(trunk, peers, update)
        branches = None
        if trunk is not None:
            branches, peers = peers, _branch_peers(trunk, peers)
            if num_classes is None:
                num_classes = _output_size(peers[0])
            if any(_uses_float16(peer) for peer in peers):
                raise ValueError(
                    "A cohort with a shared `trunk` does not train in float16: "
                    "each peer's optimizer has its own loss scale, which would "
                    "scale the trunk's summed gradient unevenly. Use float32 "
                    "or bfloat16."
                )
        teacher = _validate_teacher(teacher, peers, num_classes)
        dml_losses.validate_hyperparameters(
            kl_weight, temperature, mimicry, label_smoothing
        )
        dml_losses.check_kl_reduction(kl_reduction)
        if (
            isinstance(aux_loss_weight, bool)
            or not isinstance(aux_loss_weight, (int, float))
            or not 0 <= aux_loss_weight < float("inf")
        ):
            raise ValueError(
                "`aux_loss_weight` must be a finite number >= 0. "
                f"Received: aux_loss_weight={aux_loss_weight!r}"
            )
        if update not in UPDATE_MODES:
            raise ValueError(
                f"`update` must be one of {UPDATE_MODES}. Received: update={update!r}"
            )
        kl_ramp.check(kl_ramp_up_steps, kl_burn_in_steps, kl_ramp_shape)
        mimicry = mimicry_methods.get(mimicry)
        if mimicry.requires_trunk and trunk is None:
            raise ValueError(
                f"mimicry={mimicry_methods.name_of(mimicry)!r} trains the "
                "branches of a shared trunk: pass `trunk=` (the lower stages) "
                "and the branches as `peers`, e.g. from "
                "keras_dml.models.resnet_cifar_branches."
            )
        if update == "sequential" and not mimicry.supports_sequential:
            # The reason is known for the built-in copies only; a user's
            # method says it does not support the order, for its own reasons.
            why = (
                ": its teachers are copies of the peers that no peer's update "
                "changes within a step, so the sequential order would give the "
                "same result at a higher cost"
                if mimicry.uses_peer_copies
                else f" (its class {type(mimicry).__name__} sets "
                "`supports_sequential = False`)"
            )
            raise ValueError(
                f"mimicry={mimicry_methods.name_of(mimicry)!r} takes "
                f"update='simultaneous' only{why}."
            )
        _validate_peer_distortion(peer_distortion, trunk, update, mimicry)
        super().__init__(**kwargs)
        self.peers = peers
        self.trunk = trunk
        self.peer_distortion = peer_distortion
        self.branches = branches
        self.num_classes = num_classes
        self.kl_weight = float(kl_weight)
        self.temperature = float(temperature)
        self.mimicry = mimicry
        self.update = update
        self.label_smoothing = float(label_smoothing)
        self.aux_loss_weight = float(aux_loss_weight)
        self._branch_readers = None
        if trunk is not None:
            features_shape = tuple(trunk.outputs[0].shape[1:])
            if mimicry.reads_branch_features:
                readers = _branch_feature_readers(branches, mimicry)
                # Not tracked: the readers hold the branches' own layers,
                # which the cohort saves as the branches.
                self._branch_readers = _Untracked(readers)
                features_shape = tuple(readers[0].outputs[1].shape[1:])
            self.mimicry.setup_trunk(features_shape, len(peers))
        if teacher is not None:
            teacher.trainable = False  # Its weights leave every gradient.
        self.teacher = teacher
        self.kl_ramp_up_steps = kl_ramp_up_steps
        self.kl_burn_in_steps = kl_burn_in_steps
        self.kl_ramp_shape = kl_ramp_shape
        self.kl_reduction = kl_reduction
        self._step_kl_factor = None  # Set while a training step is traced.
        self._class_weight = None  # What fit's step functions were made with.
        self._cohort_metrics = None
        self._compile_args = None
        self._built_input_shape = None
        if all(peer.built for peer in peers):
            self.mimicry.setup(peers)
            self.built = True

    # ----------------------------------------------------------------- graph

    def build(self, input_shape):
        spec = keras.KerasTensor(input_shape)
        for peer in self.peers:
            if not peer.built:
                # A symbolic call, as Keras builds a layer on its first call:
                # `peer.build(shape)` on a subclassed peer without a build()
                # of its own warns that it may leave state unbuilt.
                peer(spec)
        # Peers without a graph until now (a Sequential without an Input, a
        # subclassed model): their class counts are known from here on.
        sizes = {}
        for peer in self.peers:
            try:
                output = peer.compute_output_spec(spec)
            except Exception:  # A peer that cannot say before it runs.
                sizes[peer.name] = None
                continue
            sizes[peer.name] = split_peer_output(output, peer.name)[0].shape[-1]
        _check_sizes(sizes)
        self.mimicry.setup(self.peers)
        known = [size for size in sizes.values() if size is not None]
        if self.num_classes is None and known:
            self.num_classes = known[0]
        self._built_input_shape = tuple(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        logits = [logits for logits, _ in self._forward(inputs, training)]
        _check_sizes({peer.name: z.shape[-1] for peer, z in zip(self.peers, logits)})
        return logits

    def _forward(self, inputs, training):
        """`(logits, aux_logits)` of every peer."""
        return self._forward_with_features(inputs, training)[0]

    def _forward_with_features(self, inputs, training):
        """`([(logits, aux_logits) of every peer], the features the mimicry
        method reads)`: with a trunk, the trunk runs once and every branch on
        its output, and the features are the trunk's (with a method that
        reads the branches', the list of every branch's); without, None."""
        features = None
        if self.trunk is None:
            outputs = [
                split_peer_output(
                    peer(self._peer_view(inputs, training), training=training),
                    peer.name,
                )
                for peer in self.peers
            ]
        elif self._branch_readers is not None:
            shared = self.trunk(inputs, training=training)
            read = [
                reader(shared, training=training) for reader in self._branch_readers
            ]
            outputs = [(z, []) for z, _ in read]
            features = [h for _, h in read]
        else:
            features = self.trunk(inputs, training=training)
            outputs = [
                split_peer_output(branch(features, training=training), peer.name)
                for branch, peer in zip(self.branches, self.peers)
            ]
        if not self.built:
            # Peers without an Input were built by this first call; so is the
            # cohort (export and saving check it), for inputs like these.
            self._built_input_shape = tuple(keras.tree.flatten(inputs)[0].shape)
            self.mimicry.setup(self.peers)
            self.built = True
        return outputs, features

    def _peer_view(self, inputs, training):
        """The batch as one peer sees it: in training, its own draw of
        `peer_distortion` (each call draws anew); otherwise the batch."""
        if self.peer_distortion is None or not training:
            return inputs
        return self.peer_distortion(inputs, training=True)

    def _updated_models(self):
        """The models whose variables each optimizer updates, in optimizer
        order: every peer (its branch, with a trunk), then the trunk."""
        if self.trunk is None:
            return list(self.peers)
        return [*self.branches, self.trunk]

    def _peer_trainable_variables(self):
        """Per optimizer, the variables it updates (see `_updated_models`;
        the trunk's optimizer also trains the mimicry method's layers, e.g.
        ONE's gate)."""
        groups = [model.trainable_variables for model in self._updated_models()]
        if self.trunk is not None:
            groups[-1] = [*groups[-1], *self.mimicry.trainable_variables]
        return groups

    def _trunk_loss(self, objectives, trained_teachers_share):
        """What the trunk is trained on: the sum of the peers' loss shares
        (each branch's gradient reaches the trunk, summed), the
        cross-entropy of the method's trained teachers and the trunk's own
        regularization, counted once."""
        total = sum(loss for loss, _ in objectives) + trained_teachers_share
        if self.trunk.losses:
            total = total + sum(self.trunk.losses) / self._num_replicas()
        return total

    # --------------------------------------------------------------- compile

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        metrics=None,
        *,
        loss_weights=None,
        weighted_metrics=None,
        run_eagerly=False,
        steps_per_execution=1,
        jit_compile="auto",
        auto_scale_loss=True,
    ):
        """Configures the cohort for training.

        Args:
            optimizer: one optimizer (name or instance), cloned from its config
                for every peer so that no state is shared, or a list of K
                optimizers, one per peer (with a `trunk`: K + 1, the trunk's
                last). Learning-rate schedules are cloned with it and run per
                peer.
            loss: must be None: the loss is defined by the model's
                hyperparameters (`kl_weight`, `temperature`, ...).
            metrics: metrics computed for every peer (`peer{i}_<name>`) and for
                the ensemble (`ensemble_<name>`) on predicted probabilities,
                or on logits for a metric with `from_logits=True` (the
                ensemble's: the log of its mean probabilities);
                "accuracy" means sparse categorical accuracy.
            loss_weights, weighted_metrics: not supported (must be None).
            run_eagerly, steps_per_execution, jit_compile: as in `keras.Model`.
            auto_scale_loss: wrap the optimizer of each peer that computes in
                float16 in its own `keras.optimizers.LossScaleOptimizer`.
        """
        for arg, value in (
            ("loss", loss),
            ("loss_weights", loss_weights),
            ("weighted_metrics", weighted_metrics),
        ):
            if value is not None:
                raise ValueError(
                    f"MutualLearningModel defines its own loss; `{arg}` must be "
                    "None (set kl_weight, temperature, mimicry and "
                    f"label_smoothing on the model). Received: {arg}={value!r}"
                )
        with self._variable_scope():
            peer_optimizers = self._make_peer_optimizers(optimizer, auto_scale_loss)
            wrapper = PeerOptimizers(
                peer_optimizers, variable_groups=self._peer_trainable_variables
            )
            self._cohort_metrics = CohortMetrics(len(self.peers), metrics)
            super().compile(
                optimizer=wrapper,
                run_eagerly=run_eagerly,
                steps_per_execution=steps_per_execution,
                jit_compile=jit_compile,
                auto_scale_loss=False,
            )
            if all(peer.built for peer in self.peers):
                wrapper.build()
        self._compile_args = {
            "metrics": metrics,
            "run_eagerly": run_eagerly,
            "steps_per_execution": steps_per_execution,
            "jit_compile": jit_compile,
            "auto_scale_loss": auto_scale_loss,
        }

    def _make_peer_optimizers(self, optimizer, auto_scale_loss):
        num_peers = len(self.peers)
        owners = [f"peer{i}" for i in range(num_peers)]
        if self.trunk is not None:
            owners.append("trunk")
        if isinstance(optimizer, (list, tuple)):
            if len(optimizer) != len(owners):
                expected = (
                    "exactly one per peer"
                    if self.trunk is None
                    else f"exactly {len(owners)}: one per peer, then the trunk's"
                )
                raise ValueError(
                    f"`optimizer` is a list of {len(optimizer)} optimizers for a "
                    f"cohort of {num_peers} peers. Pass one optimizer (cloned for "
                    f"every peer) or {expected}. "
                    f"Received: optimizer={optimizer!r}"
                )
            optimizers = [keras.optimizers.get(opt) for opt in optimizer]
        else:
            template = keras.optimizers.get(optimizer)
            config = keras.optimizers.serialize(template)
            optimizers = []
            for owner in owners:
                # A unique name per peer: Keras callbacks log
                # `learning_rate_<optimizer name>` for each.
                config["config"]["name"] = f"{owner}_{template.name}"
                optimizers.append(keras.optimizers.deserialize(copy.deepcopy(config)))

        groups = self._peer_trainable_variables()
        for i, (opt, peer, variables) in enumerate(
            zip(optimizers, self._updated_models(), groups)
        ):
            if opt.built:
                built_for = {id(v) for v in optimizer_built_for(opt)}
                if built_for != {id(v) for v in variables}:
                    raise ValueError(
                        f"Optimizer {opt.name!r} (for peer {i}, {peer.name!r}) "
                        "was already built for other variables. Pass a new "
                        "optimizer."
                    )
        if auto_scale_loss:
            optimizers = [
                keras.optimizers.LossScaleOptimizer(
                    opt, name=f"peer{i}_loss_scale_optimizer"
                )
                if _uses_float16(peer)
                and not isinstance(opt, keras.optimizers.LossScaleOptimizer)
                else opt
                for i, (opt, peer) in enumerate(zip(optimizers, self._updated_models()))
            ]
        return optimizers

    @property
    def peer_optimizers(self):
        """The list of per-peer optimizers (after `compile()`)."""
        optimizers = self._optimizers("peer_optimizers")
        return optimizers if self.trunk is None else optimizers[: len(self.peers)]

    @property
    def trunk_optimizer(self):
        """The shared trunk's optimizer (after `compile()`; None without a
        trunk)."""
        optimizers = self._optimizers("trunk_optimizer")
        return optimizers[-1] if self.trunk is not None else None

    def _optimizers(self, name):
        if not isinstance(getattr(self, "optimizer", None), PeerOptimizers):
            raise ValueError(
                f"`{name}` exists after `compile()`; call "
                "`model.compile(optimizer=...)` first."
            )
        return self.optimizer.optimizers

    @property
    def metrics(self):
        if self._cohort_metrics is None:
            return []
        return self._cohort_metrics.all()

    def get_compile_config(self):
        if self._compile_args is None:
            return {}
        config = dict(self._compile_args)
        config["optimizer"] = [
            keras.optimizers.serialize(opt) for opt in self.optimizer.optimizers
        ]
        config["metrics"] = (
            None
            if config["metrics"] is None
            else [
                m if isinstance(m, str) else keras.saving.serialize_keras_object(m)
                for m in _as_list(config["metrics"])
            ]
        )
        return config

    def compile_from_config(self, config):
        config = copy.deepcopy(config)
        config["optimizer"] = [
            keras.optimizers.deserialize(c) for c in config["optimizer"]
        ]
        if config.get("metrics") is not None:
            config["metrics"] = [
                m if isinstance(m, str) else keras.saving.deserialize_keras_object(m)
                for m in config["metrics"]
            ]
        self.compile(**config)

    # ------------------------------------------------------------- running

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, with what makes Keras's callbacks work on a cohort.

        - `EarlyStopping`, `ModelCheckpoint` and `ReduceLROnPlateau` with
          `mode="auto"` know the direction of every cohort log
          (`val_peer0_accuracy`, `val_ensemble_accuracy`, `val_peer1_loss`, ...).
        - `history.history["learning_rate"]` exists when a learning-rate
          callback runs, as in plain Keras.
        - The progress bar shows the loss and, per peer and for the ensemble,
          the first compiled metric (`keras_dml.cohort.progress.CohortProgbar`); pass
          `keras.callbacks.ProgbarLogger()` for Keras's bar with every term.
          The history keeps every term.
        - Bad labels raise a `ValueError` that says what was received.
        - `sample_weight` (or a third element of each batch) multiplies each
          example's cross-entropy and mimicry (KL) terms; `class_weight`
          (`{class id: weight}`) weights labeled examples by class, and
          unlabeled ones (label -1) by 1. As in Keras, the means keep their
          unweighted denominators, validation gets no class weights, and
          the compiled metrics are unweighted.
        """
        return self._run(super().fit, args, kwargs)

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate`, with the compact progress bar and label
        errors of `fit`."""
        return self._run(super().evaluate, args, kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        self._check_arrays(x, y)
        with label_errors():
            return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        self._check_arrays(x, y)
        with label_errors():
            return super().test_on_batch(x, y, *args, **kwargs)

    def _run(self, method, args, kwargs):
        # Keras's own signature: the JAX steps wrap `evaluate` as
        # (*args, **kwargs), whose binding would name no argument.
        signature = inspect.signature(getattr(keras.Model, method.__name__))
        bound = signature.bind(self, *args, **kwargs)
        given = bound.arguments
        self._check_arrays(given.get("x"), given.get("y"))
        validation = given.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            self._check_arrays(validation[0], validation[1], "validation_data")
        if not self.checks_labels_in_graph:
            # Checked on the host batch by batch (keras_dml.cohort.checked_batches).
            for name in ("x", "validation_data"):
                if isinstance(given.get(name), keras.utils.PyDataset):
                    bound.arguments[name] = CheckedPyDataset(
                        given[name], self._check_arrays
                    )
        verbose = bound.arguments.get("verbose", "auto")
        if method.__name__ == "fit":
            # Applied in the step (Keras's own conversion indexes a table by
            # the label, and fails on -1, an unlabeled example).
            class_weight = bound.arguments.pop("class_weight", None)
            if class_weight is not None and given.get("sample_weight") is not None:
                raise ValueError(
                    "You cannot pass `class_weight` and `sample_weight` at the "
                    "same time (as in Keras)."
                )
            table = class_weight_table(class_weight)
            if table is not None and self.num_classes is not None:
                if len(table) > self.num_classes:
                    raise ValueError(
                        f"`class_weight` names class {len(table) - 1}, but the "
                        f"peers have {self.num_classes} classes (ids 0 to "
                        f"{self.num_classes - 1})."
                    )
            if table != self._class_weight:
                # The step functions hold the table: trace them again.
                self.train_function = None
                self._class_weight = table
        bound.arguments["callbacks"] = with_cohort_callbacks(
            self, bound.arguments.get("callbacks"), verbose
        )
        with label_errors():
            return method(*bound.args[1:], **bound.kwargs)

    def _check_arrays(self, x, y, where=""):
        """Checks NumPy inputs on the host, before Keras's step loop starts.

        On JAX an in-step check comes too late: Keras's JAX trainer has taken
        the model's state into the step, and an error there leaves the model
        unusable; a label out of range would otherwise train to NaN. Checking
        here gives the same error on every backend and leaves the model as it
        was. A `PyDataset`'s batches are checked here too, as Keras reads them
        (`keras_dml.cohort.checked_batches`), on JAX and PyTorch; tf.data datasets
        and generators inside the step (`keras_dml.cohort.labels.checked_labels`).
        """
        prefix = f"{where}: " if where else ""
        if isinstance(x, np.ndarray) and x.dtype.kind in "fc":
            finite = np.isfinite(x)
            if not finite.all():
                bad = int(x.size - np.count_nonzero(finite))
                first = np.unravel_index(int(np.argmin(finite.reshape(-1))), x.shape)
                raise ValueError(
                    f"{prefix}the inputs hold {bad} NaN or infinite value(s) (the "
                    f"first at index {tuple(int(i) for i in first)}); training on "
                    "them would make the weights NaN. Expected finite numbers."
                )
        if isinstance(y, np.ndarray) and self.num_classes is not None:
            try:
                check_host_labels(y, self.num_classes)
            except ValueError as error:
                raise ValueError(f"{prefix}{error}") from None

    def export(self, filepath, format="tf_saved_model", verbose=None, **kwargs):
        """`keras.Model.export`: a SavedModel whose `serve` endpoint takes the
        peers' input and returns the list of the K peers' logits, in peer
        order.

        The input signature defaults to the peers' input shape with any batch
        size. For TF Serving with raw uint8 images, probabilities and one
        model per peer, use `keras_dml.export.export_peers`.
        """
        if kwargs.get("input_signature") is None:
            kwargs["input_signature"] = [self._input_spec_for_export()]
        return super().export(filepath, format=format, verbose=verbose, **kwargs)

    def as_functional(self):
        """The cohort as a functional `keras.Model` that shares the peers (and
        so their weights): one input, and each peer's logits as an output
        named after the peer.

        A `MutualLearningModel` is a subclassed model, which Keras draws as
        one box; for what needs a graph of layers, use this:

        ```python
        keras.utils.plot_model(model.as_functional(), expand_nested=True)
        model.as_functional().summary(expand_nested=True)
        ```
        """
        spec = self._input_spec_for_export()
        inputs = keras.Input(shape=spec.shape[1:], dtype=spec.dtype, name="inputs")
        outputs = {
            peer.name: split_peer_output(peer(inputs), peer.name)[0]
            for peer in self.peers
        }
        return keras.Model(inputs, outputs, name=f"{self.name}_peers")

    def _input_spec_for_export(self):
        for peer in self.peers:
            try:
                tensor = peer.inputs[0]
            except (AttributeError, ValueError, TypeError, IndexError):
                continue
            return keras.InputSpec(shape=(None, *tensor.shape[1:]), dtype=tensor.dtype)
        if self._built_input_shape is not None:
            shape = self._built_input_shape
            return keras.InputSpec(shape=(None, *shape[1:]), dtype="float32")
        raise ValueError(
            "The peers' input shape is unknown (no peer has an Input and the "
            "cohort was never built). Pass `input_signature=[keras.InputSpec("
            "shape=(None, ...))]`, or call the model on a batch first."
        )

    # ----------------------------------------------------------------- steps

    def _unpack(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError(
                "MutualLearningModel needs labels: pass (x, y) with integer "
                "class ids, -1 for unlabeled examples."
            )
        return x, y, sample_weight

    def _example_weights(self, labels):
        """The batch's per-example weights (None: all 1): its sample
        weights, or in training the class weights of its labels."""
        weights, table = _STEP_WEIGHTS.__dict__.get(id(self), (None, None))
        if table is not None:
            labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
            known = ops.logical_and(labels >= 0, labels < len(table))
            index = ops.where(known, labels, 0)
            by_class = ops.take(ops.convert_to_tensor(table, "float32"), index)
            weights = ops.where(known, by_class, 1.0)
        if weights is None:
            return None
        return ops.reshape(ops.cast(weights, "float32"), (-1,))

    def _terms(self, labels, logits, teachers, peer_indices=None):
        num_peers = len(self.peers)
        return dml_losses.mutual_learning_terms(
            labels,
            logits,
            kl_weight=self.kl_weight,
            temperature=self.temperature,
            mimicry=self.mimicry,
            label_smoothing=self.label_smoothing,
            peer_indices=peer_indices,
            teacher_logits=teachers[:num_peers],
            fixed_teacher_logits=teachers[num_peers:],
            sample_weight=self._example_weights(labels),
            kl_reduction=self.kl_reduction,
        )

    def _teachers(self, x, logits, training, trained=()):
        """The teachers' logits, under stop-gradient: the mimicry method's
        K (by default the peers' own), its `trained` teachers (ONE's
        ensemble), then the static teacher's, if any.

        The static teacher always runs in inference mode: its BatchNorm
        statistics are part of what was pre-trained. (In the sequential
        order it runs at every peer's turn: its logits are the same, and an
        inference pass is cheap beside the peers' training passes.)"""
        teachers = self.mimicry.teacher_logits(self.peers, x, logits, training=training)
        teachers = [*teachers, *(ops.stop_gradient(z) for z in trained)]
        if self.teacher is None:
            return teachers
        fixed, _ = split_peer_output(
            self.teacher(x, training=False), f"teacher {self.teacher.name}"
        )
        return [*teachers, ops.stop_gradient(fixed)]

    def _peer_objective(
        self, k, terms, aux_logits, labels, counts, regularization=None
    ):
        """Peer k's loss: `(this replica's share for the gradient, logged terms)`.

        Adds to the DML terms the auxiliary classifiers' cross-entropy (weight
        `aux_loss_weight`) and the peer's own regularization losses (read
        from the peer, or `regularization`: their sum, when a step computed
        it with the forward pass).

        Keras sums gradients over replicas, so each replica divides its CE sums
        by the global number of labeled examples, its KL sum by the global
        batch size and the regularization by the number of replicas: the
        summed gradients are then exactly those of the whole global batch on
        one device, also when replicas hold different numbers of labeled
        examples. The logged loss is the share rescaled so that Keras's
        example-weighted, replica-summed mean of it is the global batch loss.
        """
        num_labeled, num_examples, global_labeled, global_examples = counts
        ce_sum = terms.ce * num_labeled
        if aux_logits:
            ce_sum = ce_sum + self.aux_loss_weight * sum(
                dml_losses.sparse_cross_entropy_sum(
                    labels, z, self.label_smoothing, self._example_weights(labels)
                )[0]
                for z in aux_logits
            )
        ce = ops.divide_no_nan(ce_sum, global_labeled)
        kl = ops.divide_no_nan(terms.kl * num_examples, global_examples)
        share = dml_losses.combine_terms(
            ce, kl, self._ramped_kl_weight(), self.temperature
        )
        own = self._updated_models()[k]  # With a trunk, its branch.
        if regularization is None and own.losses:
            regularization = sum(own.losses)
        if regularization is not None:
            share = share + regularization / self._num_replicas()
        logged_loss = share * ops.divide_no_nan(global_examples, num_examples)
        return share, dml_losses.PeerLossTerms(logged_loss, terms.ce, terms.kl)

    def _build_from_inputs(self, inputs):
        """Builds the peers that have no weights yet (a subclassed peer, a
        Sequential without an Input) from the batch's shapes, by a symbolic
        call outside the step's graph, and then the mimicry method's state,
        which must exist before the step advances it."""
        specs = keras.tree.map_structure(
            lambda t: keras.KerasTensor(t.shape, t.dtype), inputs
        )
        for peer in self.peers:
            if not peer.built:
                peer(specs)
        self._built_input_shape = tuple(keras.tree.flatten(inputs)[0].shape)
        self.mimicry.setup(self.peers)
        self.built = True

    def _train_on(self, x, y, sample_weight=None):
        """One training step on a batch, as every backend runs it; the
        backend's `_simultaneous_step` / `_sequential_step` take and apply
        the gradients."""
        if not self.built:
            self._build_from_inputs(x)
        # Before the forward pass: a method's state (e.g. averaged weights)
        # advances from the peers as they are before this step.
        self.mimicry.begin_step(self.peers, self.optimizer.iterations)
        # One ramp factor for the whole step: in the sequential order the
        # first peer's update advances the step count before the others'.
        self._step_kl_factor = self._kl_factor()
        _STEP_WEIGHTS.__dict__[id(self)] = (sample_weight, self._class_weight)
        # Peer optimizers not built yet (peers that were unbuilt at compile
        # time) build themselves over their peer's variables on first apply.
        try:
            if self.update == "sequential":
                y, logits, logged = self._sequential_step(x, y)
            else:
                y, logits, logged = self._simultaneous_step(x, y)
        finally:
            self._step_kl_factor = None
            _STEP_WEIGHTS.__dict__.pop(id(self), None)
        return self._record(y, logits, logged)

    def _ramped_kl_weight(self):
        """kl_weight times the ramp's factor at this step."""
        ramp = self._step_kl_factor
        if ramp is None:  # Evaluation: the factor at the current step count.
            ramp = self._kl_factor()
        return self.kl_weight if isinstance(ramp, float) else self.kl_weight * ramp

    def _kl_factor(self):
        """The mimicry weight's ramp factor now (`keras_dml.cohort.kl_ramp`)."""
        return kl_ramp.factor(
            self.optimizer.iterations if self.optimizer is not None else 0,
            self.kl_ramp_up_steps,
            self.kl_burn_in_steps,
            self.kl_ramp_shape,
        )

    def _cohort_objectives(self, x, y):
        """Every peer's training forward pass and objective:
        `(checked labels, logits, [(loss share, logged terms) per peer],
        the trained teachers' loss share)` (the last 0 without a trunk; see
        `Mimicry.trained_teachers`). Call it where gradients are recorded."""
        outputs, features = self._forward_with_features(x, training=True)
        logits = [z for z, _ in outputs]
        y = self._checked(y, logits)
        counts = self._counts(y)
        trained = []
        if features is not None:
            trained = self.mimicry.trained_teachers(features, logits, training=True)
        teachers = self._teachers(
            x, [ops.stop_gradient(z) for z in logits], training=True, trained=trained
        )
        objectives = [
            self._peer_objective(k, t, outputs[k][1], y, counts)
            for k, t in enumerate(self._terms(y, logits, teachers))
        ]
        share = self._trained_teachers_share(trained, y, logits, counts)
        return y, logits, objectives, share

    def _trained_teachers_share(self, trained, labels, logits, counts):
        """The loss of the method's trained teachers, this replica's share:
        their cross-entropy (as the peers' CE, over the global labeled
        count), or with `trained_teachers_loss="mimicry"` the KL of trained
        teacher k to peer k under stop-gradient (as the peers' KL, over the
        global batch size, ramped and weighted as theirs)."""
        if self.mimicry.trained_teachers_loss == "mimicry":
            return self._teachers_mimicry_share(trained, labels, logits, counts)
        share = 0.0
        for z in trained:
            ce_sum, _ = dml_losses.sparse_cross_entropy_sum(
                labels, z, self.label_smoothing, self._example_weights(labels)
            )
            share = share + ops.divide_no_nan(ce_sum, counts[2])
        return share

    def _teachers_mimicry_share(self, trained, labels, logits, counts):
        weights = self._example_weights(labels)
        temperature = self.temperature
        kl_sum = 0.0
        for teacher, z in zip(trained, logits):
            target = ops.log_softmax(teacher / temperature, axis=-1)
            own = ops.log_softmax(ops.cast(z, "float32") / temperature, axis=-1)
            per_example = dml_losses.kl_divergence(target, ops.stop_gradient(own))
            if weights is not None:
                per_example = per_example * weights
            kl_sum = kl_sum + ops.sum(per_example)
        kl = ops.divide_no_nan(kl_sum, counts[3])
        return dml_losses.combine_terms(0.0, kl, self._ramped_kl_weight(), temperature)

    def _test_on(self, x, y, sample_weight=None):
        """One evaluation step on a batch, as every backend runs it."""
        # No class weights in evaluation, as in Keras.
        _STEP_WEIGHTS.__dict__[id(self)] = (sample_weight, None)
        try:
            return self._test_step_on(x, y)
        finally:
            _STEP_WEIGHTS.__dict__.pop(id(self), None)

    def _test_step_on(self, x, y):
        if not self.built:
            self._build_from_inputs(x)
        # Auxiliary classifiers are a training aid: evaluation uses the logits.
        outputs, features = self._forward_with_features(x, training=False)
        logits = [z for z, _ in outputs]
        y = self._checked(y, logits)
        counts = self._counts(y)
        trained = []
        if features is not None:
            trained = self.mimicry.trained_teachers(features, logits, training=False)
        teachers = self._teachers(x, logits, training=False, trained=trained)
        logged = [
            self._peer_objective(k, t, [], y, counts)[1]
            for k, t in enumerate(self._terms(y, logits, teachers))
        ]
        return self._record(y, logits, logged)

    def _record(self, labels, logits, terms):
        safe_labels, mask = dml_losses.labeled_mask(labels)
        num_examples = ops.cast(ops.shape(mask)[0], "float32")
        cohort = self._cohort_metrics
        cohort.update_losses(terms, ops.sum(mask), num_examples)
        logits = [ops.cast(z, "float32") for z in logits]
        probabilities = [ops.softmax(z, axis=-1) for z in logits]
        cohort.update_metrics(safe_labels, mask, probabilities, logits)
        cohort.update_diagnostics(probabilities, logits, num_examples)
        return self._finalize_logs(self.get_metrics_result())

    # ---------------------------------------------------------------- config

    # Keras saves no layer's random state (`SeedGenerator`s are not among
    # the variables a layer saves): the cohort saves `peer_distortion`'s, so
    # that a resumed run draws the views the uninterrupted run would have.
    def _distortion_seed_states(self):
        if self.peer_distortion is None:
            return []
        return [
            v for v in self.peer_distortion.non_trainable_variables if _is_seed_state(v)
        ]

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, state in enumerate(self._distortion_seed_states()):
            store[f"peer_distortion_seed_{i}"] = keras.ops.convert_to_numpy(state.value)

    def load_own_variables(self, store):
        states = self._distortion_seed_states()
        own = {key: store[key] for key in store.keys() if not key.startswith("peer_")}
        super().load_own_variables(own)
        for i, state in enumerate(states):
            key = f"peer_distortion_seed_{i}"
            if key in store:
                state.assign(store[key])

    def get_config(self):
        config = super().get_config()
        peers = self.peers if self.trunk is None else self.branches
        config.update(
            {
                "peers": [keras.saving.serialize_keras_object(p) for p in peers],
                "trunk": None
                if self.trunk is None
                else keras.saving.serialize_keras_object(self.trunk),
                "kl_weight": self.kl_weight,
                "temperature": self.temperature,
                "mimicry": keras.saving.serialize_keras_object(self.mimicry),
                "update": self.update,
                "label_smoothing": self.label_smoothing,
                "aux_loss_weight": self.aux_loss_weight,
                "teacher": None
                if self.teacher is None
                else keras.saving.serialize_keras_object(self.teacher),
                "kl_ramp_up_steps": self.kl_ramp_up_steps,
                "kl_burn_in_steps": self.kl_burn_in_steps,
                "kl_ramp_shape": self.kl_ramp_shape,
                "kl_reduction": self.kl_reduction,
                "peer_distortion": None
                if self.peer_distortion is None
                else keras.saving.serialize_keras_object(self.peer_distortion),
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Deserializing a functional model consumes its config in place.
        config = copy.deepcopy(config)
        peers = [
            keras.saving.deserialize_keras_object(p, custom_objects=custom_objects)
            for p in config.pop("peers")
        ]
        if isinstance(config.get("mimicry"), dict):
            config["mimicry"] = keras.saving.deserialize_keras_object(
                config["mimicry"], custom_objects=custom_objects
            )
        if isinstance(config.get("trunk"), dict):
            config["trunk"] = keras.saving.deserialize_keras_object(
                config["trunk"], custom_objects=custom_objects
            )
        for name in ("teacher", "peer_distortion"):
            if isinstance(config.get(name), dict):
                config[name] = keras.saving.deserialize_keras_object(
                    config[name], custom_objects=custom_objects
                )
        return cls(peers, **config)


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


# `(sample weights, class-weight table)` of the batch whose step runs, per
# thread and model: under MirroredStrategy every replica traces the step in a
# thread of its own, with its own shard of the weights (an attribute of the
# model would be shared, and cleared by the replica that finishes first).
_STEP_WEIGHTS = threading.local()


def class_weight_table(class_weight):
    """`fit`'s `class_weight` (`{class id: weight}`) as a tuple of floats
    indexed by class id (1.0 for ids not given), or None."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict) or not class_weight:
        raise ValueError(
            "`class_weight` must be a non-empty dict {class id: weight}. "
            f"Received: {class_weight!r}"
        )
    table = {}
    for key, value in class_weight.items():
        try:
            index = operator.index(key)
            weight = float(value)
        except (TypeError, ValueError):
            index, weight = None, None
        if index is None or index < 0 or not math.isfinite(weight) or weight < 0:
            raise ValueError(
                "`class_weight` maps class ids (integers >= 0) to finite weights "
                f">= 0. Received: {key!r}: {value!r}"
            )
        table[index] = weight
    return tuple(table.get(i, 1.0) for i in range(max(table) + 1))
