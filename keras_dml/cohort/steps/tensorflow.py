"""The cohort's step on TensorFlow: a `tf.GradientTape`, `tf.distribute`."""

import keras
import tensorflow as tf
from keras import ops

from keras_dml.cohort.keras_internals import (
    SYMBOLIC_BUILD_HOOK,
    explicit_strategy,
    in_multi_worker_mode,
)
from keras_dml.cohort.labels import checked_labels, labeled_mask
from keras_dml.cohort.peer_calls import peer_logits


class TensorFlowSteps:
    """`MutualLearningModel`'s steps on the TensorFlow backend, under any
    `tf.distribute` strategy (see `keras_dml.cohort.steps`)."""

    # Label values are asserted inside the graph (`checked_labels`), so a
    # keras.utils.PyDataset needs no host-side check batch by batch.
    checks_labels_in_graph = True

    def train_step(self, data):
        return self._train_on(*self._unpack(data))

    def test_step(self, data):
        return self._test_on(*self._unpack(data))

    def _simultaneous_step(self, x, y):
        if self.trunk is not None:
            return self._shared_trunk_step(x, y)
        with tf.GradientTape(persistent=True) as tape:
            y, logits, objectives, _ = self._cohort_objectives(x, y)
            scaled = [
                opt.scale_loss(loss)
                for opt, (loss, _) in zip(self.peer_optimizers, objectives)
            ]
        # Peer k's loss reaches only peer k's weights (the targets are under
        # stop-gradient), so each backward pass covers one peer.
        for k, scaled_loss in enumerate(scaled):
            self._apply_peer_gradients(k, tape, scaled_loss)
        del tape
        return y, logits, [logged for _, logged in objectives]

    def _shared_trunk_step(self, x, y):
        # The peers' losses summed: each branch's gradient is its own loss's
        # (stop-gradient targets), the trunk's the sum of all of them. One
        # backward pass; no loss scaling (a trunk cohort refuses float16).
        with tf.GradientTape() as tape:
            y, logits, objectives, trained_share = self._cohort_objectives(x, y)
            total = self._trunk_loss(objectives, trained_share)
        variables = [v for group in self._peer_trainable_variables() for v in group]
        self.optimizer.apply(tape.gradient(total, variables), variables)
        return y, logits, [logged for _, logged in objectives]

    def _sequential_step(self, x, y):
        """The paper's Algorithm 1 on one mini-batch.

        Peer k's forward pass is recorded once, before any update: it depends
        only on peer k's weights, which are unchanged until peer k's own turn.
        After peer k is updated, its predictions are recomputed (without
        gradients, without touching BatchNorm statistics) as targets for the
        peers after it: K + (K - 1) forward passes instead of K * K. The
        mimicry method builds peer k's targets from the logits of the peers
        as they are at peer k's turn.
        """
        num_peers = len(self.peers)
        logged = [None] * num_peers
        with tf.GradientTape(persistent=True) as tape:
            outputs = self._forward(x, training=True)
            logits = [z for z, _ in outputs]
            y = self._checked(y, logits)
            counts = self._counts(y)
            current = list(logits)
            for k in range(num_peers):
                with tape.stop_recording():
                    teachers = self._teachers(x, current, training=True)
                (terms,) = self._terms(y, current, teachers, peer_indices=[k])
                loss, logged[k] = self._peer_objective(
                    k, terms, outputs[k][1], y, counts
                )
                scaled_loss = self.peer_optimizers[k].scale_loss(loss)
                with tape.stop_recording():
                    self._apply_peer_gradients(k, tape, scaled_loss)
                    if k < num_peers - 1:
                        current[k] = peer_logits(self.peers[k], x)
        del tape
        return y, logits, logged

    def _apply_peer_gradients(self, k, tape, scaled_loss):
        """Updates peer k from `scaled_loss`, its loss times its optimizer's
        loss scale (computed while `tape` records, or it has no gradient)."""
        variables = self.peers[k].trainable_variables
        self.peer_optimizers[k].apply(tape.gradient(scaled_loss, variables), variables)

    def _checked(self, y, logits):
        """The labels as flat int32 ids, checked in the graph against the
        logits' class count (errors say what was received; see
        `keras_dml.cohort.labels`)."""
        return checked_labels(y, logits[0].shape[-1], ops.shape(logits[0])[0])

    def _num_replicas(self):
        return self.distribute_strategy.num_replicas_in_sync

    def _counts(self, labels):
        """Local and global numbers of labeled examples and of examples.

        Computed once per step: one small all-reduce before any peer update,
        so every replica issues its collectives in the same order.
        """
        _, mask = labeled_mask(labels)
        local = [ops.sum(mask), ops.cast(ops.shape(mask)[0], "float32")]
        if self._num_replicas() == 1:
            return (*local, *local)
        global_counts = tf.distribute.get_replica_context().all_reduce("sum", local)
        return (*local, *global_counts)

    def _variable_scope(self):
        # Metric and optimizer variables must be created under the strategy
        # that will run the steps (mirrored variables, sync-on-read metrics).
        return self.distribute_strategy.scope()

    def _finalize_logs(self, logs):
        strategy = self.distribute_strategy
        if isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy
        ) and in_multi_worker_mode(strategy):
            # Keras 3 reduces a multi-worker step's logs with
            # strategy.reduce("MEAN", v, axis=0), which fails for scalars
            # ("Invalid reduction dimension 0 for input with 0 dimensions",
            # tensorflow#72388). As [1] vectors they are concatenated over
            # replicas and averaged: the mean over replicas "auto" gives on
            # one worker, returned as a scalar.
            return {name: ops.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # A private Keras hook (keras_internals.SYMBOLIC_BUILD_HOOK; a test
        # checks Keras still calls it so). Under a strategy Keras (3.15)
        # builds from the first batch of the distributed dataset: it starts
        # the input pipeline and drops the iterator after one batch (a
        # MirroredStrategy run on CI once died there, in the iterator's
        # teardown), then all-reduces the whole batch with strategy.reduce
        # only to read its shapes, which under MultiWorkerMirroredStrategy
        # fails for a nested batch ("Attempt to convert a value
        # (PerReplica...) to a Tensor") and costs a collective. The
        # dataset's element spec has the shapes and dtypes without reading
        # anything; where it cannot say (a composite element), one local
        # replica's shard of the first batch does.
        if iterator is not None and explicit_strategy(self) is not None:
            data_batch = _replica_specs(iterator)
            if data_batch is None:
                for _, _, batches in iterator:
                    data_batch = keras.tree.map_structure(
                        self._one_replica, next(batches)
                    )
                    break
            iterator = None
        build = getattr(super(), SYMBOLIC_BUILD_HOOK)
        return build(iterator=iterator, data_batch=data_batch)

    def _one_replica(self, value):
        if isinstance(value, tf.distribute.DistributedValues):
            return self.distribute_strategy.experimental_local_results(value)[0]
        return value


def _replica_specs(iterator):
    """One replica's `tf.TensorSpec`s of the batches `iterator` (a Keras
    TensorFlow epoch iterator) will give, or None where its dataset's element
    spec holds anything but tensors."""
    dataset = getattr(iterator, "_distributed_dataset", None)
    spec = getattr(dataset, "element_spec", None)
    if spec is None:
        return None

    def one_replica(leaf):
        # A PerReplicaSpec holds one TensorSpec per local replica.
        replicas = getattr(leaf, "_value_specs", None)
        leaf = replicas[0] if replicas else leaf
        return leaf if isinstance(leaf, tf.TensorSpec) else None

    specs = keras.tree.map_structure(one_replica, spec)
    if any(leaf is None for leaf in keras.tree.flatten(specs)):
        return None
    return specs


STEPS = TensorFlowSteps
