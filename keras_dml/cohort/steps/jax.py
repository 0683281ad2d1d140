"""The cohort's step on JAX: `jax.value_and_grad` over the cohort's state.

Keras's JAX trainer passes a step the values of every variable (the peers',
the optimizers', the metrics') and takes their new values back. The step
runs the model's ordinary code inside a `keras.StatelessScope` that maps each
variable to its value, so the forward pass, the mimicry method's state, the
optimizers' updates and the metrics are written once for every backend; only
the gradient is JAX's.

Distribution: under `keras.distribution.DataParallel`, `fit` shards every
batch over the devices and runs the step on the global batch (one program,
SPMD): the labeled-example counts and BatchNorm statistics are the global
batch's, as on one device. `evaluate` and `predict` differ from Keras's JAX
trainer here: they give every device whole batches (the weights are
replicated anyway), since a test set's last batch rarely divides by the
number of devices, and JAX cannot shard it. Evaluation is a small part of
the work; its metrics are exact for a test set of any size. On several
processes, each then evaluates all of the data it is given: give every
process the same evaluation data.
"""

import contextlib

import jax
import keras
from keras import StatelessScope, ops

from keras_dml.cohort.keras_internals import current_stateless_scope
from keras_dml.cohort.labels import flat_labels
from keras_dml.cohort.peer_calls import peer_logits, split_peer_output
from keras_dml.cohort.steps.single_program import SingleProgramSteps


class JaxSteps(SingleProgramSteps):
    """`MutualLearningModel`'s steps on the JAX backend (see
    `keras_dml.cohort.steps`)."""

    def train_step(self, state, data):
        groups = (
            self.trainable_variables,
            self.non_trainable_variables,
            self.optimizer.variables,
            self.metrics_variables,
        )
        return self._stateless(
            groups, state, lambda: self._train_on(*self._unpack(data))
        )

    def test_step(self, state, data):
        groups = (
            self.trainable_variables,
            self.non_trainable_variables,
            self.metrics_variables,
        )
        return self._stateless(
            groups, state, lambda: self._test_on(*self._unpack(data))
        )

    def evaluate(self, *args, **kwargs):
        with whole_batches():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with whole_batches():
            return super().predict(*args, **kwargs)

    def _stateless(self, groups, state, step):
        """Runs `step()` with every variable of `groups` at its value in
        `state`; returns its logs and the variables' new values."""
        mapping = [
            (variable, value)
            for variables, values in zip(groups, state)
            for variable, value in zip(variables, values)
        ]
        with StatelessScope(state_mapping=mapping) as scope:
            logs = step()
        new_state = tuple(
            [scope.get_current_value(v) for v in variables] for variables in groups
        )
        return logs, new_state

    def _as_function_of(self, fn, variables):
        """`fn()` as a pure function of the values of `variables`, inside the
        step's stateless scope: returns `(function, their current values,
        written)`, where `function(values)` gives `(fn's result, new values of
        written)` and `written` is the model's other state that `fn` may
        change (BatchNorm statistics, the mimicry method's copies, seeds)."""
        outer = current_stateless_scope()
        state = [*self.variables, *self.optimizer.variables]
        targets = {id(v) for v in variables}
        written = [v for v in self.non_trainable_variables if id(v) not in targets]

        def function(values):
            mapping = [
                (v, outer.get_current_value(v)) for v in state if id(v) not in targets
            ]
            mapping += list(zip(variables, values))
            with StatelessScope(state_mapping=mapping) as inner:
                result = fn()
                updates = [inner.get_current_value(v) for v in written]
            return result, updates

        current = [outer.get_current_value(v) for v in variables]
        return function, current, written

    def _value_and_grad(self, loss_fn, variables):
        """`((loss, aux), gradients)` of `loss_fn()` with respect to
        `variables`; the other state `loss_fn` changes is written back."""
        function, current, written = self._as_function_of(loss_fn, variables)

        def loss_and_aux(values):
            (loss, aux), updates = function(values)
            return loss, (aux, updates)

        (loss, (aux, updates)), grads = jax.value_and_grad(loss_and_aux, has_aux=True)(
            current
        )
        for variable, value in zip(written, updates):
            variable.assign(value)
        return (loss, aux), grads

    def _recorded_forward(self, k, x):
        """Peer k's training forward pass, recorded: `((logits, aux logits,
        regularization), pullback)`, where `pullback(cotangents)` gives the
        gradients of peer k's trainable variables (as a `tf.GradientTape`
        kept from the forward pass would). The pass's state updates
        (BatchNorm statistics, dropout seeds) are written."""
        peer = self.peers[k]

        def forward():
            z, aux_logits = split_peer_output(peer(x, training=True), peer.name)
            # The regularization is an output too, so that its gradient
            # reaches the weights through the same pullback.
            regularization = sum(peer.losses) if peer.losses else ops.zeros(())
            return z, aux_logits, regularization

        function, current, written = self._as_function_of(
            forward, peer.trainable_variables
        )
        outputs, pullback, updates = jax.vjp(function, current, has_aux=True)
        for variable, value in zip(written, updates):
            variable.assign(value)
        return outputs, lambda cotangents: pullback(cotangents)[0]

    def _simultaneous_step(self, x, y):
        # With stop-gradient targets, the gradient of the summed losses with
        # respect to peer k's weights is that of peer k's own loss: one
        # backward pass, each peer optimizer given its peer's slice. A shared
        # trunk's is the sum of every peer's (no loss scaling: a trunk cohort
        # refuses float16).
        groups = self._peer_trainable_variables()
        variables = [v for group in groups for v in group]

        def loss_fn():
            labels, logits, objectives, trained_share = self._cohort_objectives(x, y)
            if self.trunk is not None:
                total = self._trunk_loss(objectives, trained_share)
            else:
                total = sum(
                    opt.scale_loss(loss)
                    for opt, (loss, _) in zip(self.peer_optimizers, objectives)
                )
            return total, (labels, logits, [logged for _, logged in objectives])

        (_, (labels, logits, logged)), grads = self._value_and_grad(loss_fn, variables)
        start = 0
        for k, group in enumerate(groups):
            self._apply(k, grads[start : start + len(group)])
            start += len(group)
        return labels, logits, logged

    def _sequential_step(self, x, y):
        """The paper's Algorithm 1 on one mini-batch, as TensorFlow's step
        runs it: every peer's forward pass recorded once, before any update
        (targets, logs and BatchNorm statistics from it); then, in turn, peer
        k's loss against the peers as they are at its turn, its gradient
        pulled back through its recorded pass, its update, and its
        recomputed predictions as targets for the peers after it: 2K - 1
        forward passes.
        """
        num_peers = len(self.peers)
        recorded = [self._recorded_forward(k, x) for k in range(num_peers)]
        logits = [ops.stop_gradient(outputs[0]) for outputs, _ in recorded]
        labels = self._checked(y, logits)
        counts = self._counts(labels)
        current = list(logits)
        logged = [None] * num_peers
        for k, peer in enumerate(self.peers):
            teachers = self._teachers(x, current, training=True)
            (z, aux_logits, regularization), pullback = recorded[k]

            def objective(z, aux_logits, regularization, k=k, teachers=teachers):
                mine = [z if j == k else t for j, t in enumerate(current)]
                (terms,) = self._terms(labels, mine, teachers, peer_indices=[k])
                loss, terms = self._peer_objective(
                    k, terms, aux_logits, labels, counts, regularization
                )
                return self.peer_optimizers[k].scale_loss(loss), terms

            (_, logged[k]), cotangents = jax.value_and_grad(
                objective, argnums=(0, 1, 2), has_aux=True
            )(z, aux_logits, regularization)
            self._apply(k, pullback(cotangents))
            if k < num_peers - 1:
                current[k] = peer_logits(peer, x)
        return labels, logits, logged

    def _apply(self, k, grads):
        """Optimizer k's step (peer k's; the trunk's after the peers'),
        through its `stateless_apply` (what Keras's JAX trainer uses; a
        `LossScaleOptimizer`'s conditional updates need it), written back
        into the step's scope."""
        scope = current_stateless_scope()
        optimizer = self.optimizer.optimizers[k]
        variables = self._peer_trainable_variables()[k]
        new_variables, new_state = optimizer.stateless_apply(
            [scope.get_current_value(v) for v in optimizer.variables],
            grads,
            [scope.get_current_value(v) for v in variables],
        )
        for variable, value in zip(variables, new_variables):
            variable.assign(value)
        for variable, value in zip(optimizer.variables, new_state):
            variable.assign(value)

    def _checked(self, y, logits):
        """The labels as flat int32 ids. Their shape and type are checked when
        the step is traced; values out of range are not (JAX has no in-graph
        assertion): check labels before `fit` on this backend."""
        return flat_labels(y, logits[0].shape[-1])


@contextlib.contextmanager
def whole_batches():
    """No `keras.distribution` inside: Keras's JAX trainer then passes each
    batch whole, and the jitted step runs it on every device the (replicated)
    weights are on."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(distribution)


STEPS = JaxSteps
