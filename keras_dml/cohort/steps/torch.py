"""The cohort's step on PyTorch: `loss.backward()` / `torch.autograd.grad`,
one device.

Keras's PyTorch trainer runs steps eagerly on one device (it has no
`keras.distribution` support), so this step does too: several GPUs need the
TensorFlow or JAX backend.
"""

import torch
from keras import ops

from keras_dml.cohort.labels import check_label_values, flat_labels
from keras_dml.cohort.peer_calls import peer_logits
from keras_dml.cohort.steps.single_program import SingleProgramSteps


class TorchSteps(SingleProgramSteps):
    """`MutualLearningModel`'s steps on the PyTorch backend (see
    `keras_dml.cohort.steps`)."""

    def _simultaneous_step(self, x, y):
        # With stop-gradient targets, the gradient of the summed losses with
        # respect to peer k's weights is that of peer k's own loss: one
        # backward pass, each peer optimizer given its peer's slice. A shared
        # trunk's is the sum of every peer's (no loss scaling: a trunk cohort
        # refuses float16).
        variables = [v for group in self._peer_trainable_variables() for v in group]
        labels, logits, objectives, trained_share = self._cohort_objectives(x, y)
        if self.trunk is not None:
            total = self._trunk_loss(objectives, trained_share)
        else:
            total = sum(
                opt.scale_loss(loss)
                for opt, (loss, _) in zip(self.peer_optimizers, objectives)
            )
        grads = torch.autograd.grad(
            total, [v.value for v in variables], allow_unused=True
        )
        with torch.no_grad():
            self.optimizer.apply(list(grads), variables)
        return labels, logits, [logged for _, logged in objectives]

    def _sequential_step(self, x, y):
        """The paper's Algorithm 1 on one mini-batch: every peer's forward
        pass recorded once, then in turn peer k's gradient from it (the graph
        kept for the peers after it), its update, and its recomputed
        predictions (no gradient, no statistics written) as targets for the
        peers after it: 2K - 1 forward passes."""
        num_peers = len(self.peers)
        outputs = self._forward(x, training=True)
        logits = [z for z, _ in outputs]
        labels = self._checked(y, logits)
        counts = self._counts(labels)
        current = list(logits)
        logged = [None] * num_peers
        for k, peer in enumerate(self.peers):
            teachers = self._teachers(
                x, [ops.stop_gradient(z) for z in current], training=True
            )
            (terms,) = self._terms(labels, current, teachers, peer_indices=[k])
            loss, logged[k] = self._peer_objective(
                k, terms, outputs[k][1], labels, counts
            )
            variables = peer.trainable_variables
            grads = torch.autograd.grad(
                self.peer_optimizers[k].scale_loss(loss),
                [v.value for v in variables],
                retain_graph=k < num_peers - 1,
                allow_unused=True,
            )
            with torch.no_grad():
                self.peer_optimizers[k].apply(list(grads), variables)
                if k < num_peers - 1:
                    current[k] = peer_logits(peer, x)
        return labels, logits, logged

    def _checked(self, y, logits):
        """The labels as flat int32 ids; steps run eagerly, so their values
        are checked as on TensorFlow (a `ValueError` naming the value)."""
        num_classes = logits[0].shape[-1]
        check_label_values(ops.convert_to_numpy(y), num_classes)
        return flat_labels(y, num_classes)


STEPS = TorchSteps
