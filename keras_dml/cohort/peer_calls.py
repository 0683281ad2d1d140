"""Calling a peer: what it returns, and a training-mode pass with other weights.

Shared by the cohort (`MutualLearningModel`) and the mimicry methods that
take targets from copies of the peers (`keras_dml.mimicry`).
"""

import inspect

from keras import ops


def split_peer_output(output, peer_name):
    """`(logits, [auxiliary logits...])` from what a peer returns.

    A peer returns its logits [batch, num_classes], or a dict with "logits"
    and optionally "aux_logits" (a tensor or a list: auxiliary classifiers
    trained with cross-entropy only, as GoogLeNet's) and any other entries
    (e.g. an "embedding"), which training ignores.
    """
    if isinstance(output, dict):
        if "logits" not in output:
            raise ValueError(
                f"Peer {peer_name!r} returns a dict without a 'logits' entry. "
                f"Received keys: {sorted(output)}"
            )
        aux = output.get("aux_logits", [])
        return output["logits"], list(aux) if isinstance(aux, (list, tuple)) else [aux]
    if isinstance(output, (list, tuple)):
        raise ValueError(
            f"Peer {peer_name!r} returns {len(output)} outputs; a peer returns one "
            "logits tensor [batch, num_classes], or a dict with a 'logits' entry."
        )
    return output, []


def call_takes_training(peer):
    """Whether `peer.call` accepts a `training` argument."""
    parameters = inspect.signature(peer.call).parameters
    return "training" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def peer_logits(
    peer, inputs, trainable_values=None, non_trainable_values=None, training=True
):
    """Peer's logits with the given weight values, under stop-gradient,
    leaving the peer's variables untouched.

    `stateless_call` returns the BatchNorm statistics it would have written
    instead of assigning them, so this pass updates no statistics.

    Args:
        trainable_values, non_trainable_values: tensors in the order of
            `peer.trainable_variables` / `peer.non_trainable_variables`;
            None: the peer's current values.
        training: the mode of the pass (BatchNorm on the batch's statistics,
            dropout on).
    """
    if trainable_values is None:
        trainable_values = [v.value for v in peer.trainable_variables]
    if non_trainable_values is None:
        non_trainable_values = [v.value for v in peer.non_trainable_variables]
    # Unlike `peer(...)`, `stateless_call` passes `training` on verbatim.
    kwargs = {"training": training} if call_takes_training(peer) else {}
    output, _ = peer.stateless_call(
        trainable_values, non_trainable_values, inputs, **kwargs
    )
    logits, _ = split_peer_output(output, peer.name)
    return ops.stop_gradient(logits)
