"""What a cohort logs: loss trackers per peer and each compiled metric per peer
and for the ensemble, with the names of DESIGN.md (`peer{i}_<metric>`).

What a metric sees: the peers return logits and their mean probabilities
are the ensemble's prediction, so a compiled metric sees probabilities (a
peer's softmax; the ensemble's mean), unless it is configured with
`from_logits=True` (Keras's crossentropies, `AUC`): then it sees logits
(a peer's own; the log of the ensemble's mean probabilities, whose softmax
is that mean). So `SparseCategoricalCrossentropy(from_logits=True)`, as a
plain-Keras user passes it for a logits model, gives the same number as
the default "crossentropy"; neither is computed on the wrong input.
"""

import keras
from keras import ops

# The ensemble's logits are log-probabilities; a probability that underflowed
# to 0 would give -inf, and 0 * -inf = NaN in a one-hot crossentropy.
_SMALLEST_PROBABILITY = 1e-30

# Labels are integer class ids (negative for unlabeled examples), so Keras's
# shape-dependent aliases resolve to their sparse versions here.
_SPARSE_ALIASES = {
    "accuracy": keras.metrics.SparseCategoricalAccuracy,
    "acc": keras.metrics.SparseCategoricalAccuracy,
    "crossentropy": keras.metrics.SparseCategoricalCrossentropy,
    "ce": keras.metrics.SparseCategoricalCrossentropy,
}


def _metric_factory(spec):
    """Returns `(base_name, make(name) -> fresh Metric)` for one metrics entry."""
    if isinstance(spec, str):
        if spec in _SPARSE_ALIASES:
            cls = _SPARSE_ALIASES[spec]
            return spec, lambda name: cls(name=name)
        resolved = keras.metrics.get(spec)
        return spec, _metric_factory(resolved)[1]
    if isinstance(spec, keras.metrics.Metric):
        config = spec.get_config()

        def make(name):
            return spec.__class__.from_config({**config, "name": name})

        return spec.name, make
    if isinstance(spec, type) and issubclass(spec, keras.metrics.Metric):
        return spec().name, lambda name: spec(name=name)
    if callable(spec):
        return spec.__name__, lambda name: keras.metrics.MeanMetricWrapper(
            spec, name=name
        )
    raise ValueError(
        "Each entry of `metrics` must be a metric name, a `keras.metrics.Metric` "
        f"(instance or class) or a function. Received: {spec!r}"
    )


class CohortMetrics:
    """The trackers and metrics of a cohort of `num_peers` peers.

    A plain object, not a Keras layer: it is created in `compile()`, after the
    model may already be built, when Keras no longer accepts new tracked state.

    Args:
        num_peers: number of peers K.
        metrics: list of metric specs as given to `compile(metrics=...)`.
            Each is instantiated K + 1 times: `peer{i}_<name>` on peer i's
            probabilities and `ensemble_<name>` on the mean of the peers'
            probabilities. Unlabeled examples (label < 0) are masked out.
    """

    def __init__(self, num_peers, metrics=None):
        if metrics is None:
            metrics = []
        if isinstance(metrics, (str, keras.metrics.Metric)) or callable(metrics):
            metrics = [metrics]
        if not isinstance(metrics, (list, tuple)):
            raise ValueError(
                "`metrics` must be a list of metrics (the same metrics are "
                f"computed for every peer and the ensemble). Received: {metrics!r}"
            )
        factories = [_metric_factory(spec) for spec in metrics]
        names = [name for name, _ in factories]
        if len(set(names)) != len(names):
            raise ValueError(f"`metrics` has duplicate names: {names}")

        Mean = keras.metrics.Mean
        self.loss = Mean(name="loss")
        self.peer_loss = [Mean(name=f"peer{i}_loss") for i in range(num_peers)]
        self.peer_ce = [Mean(name=f"peer{i}_ce") for i in range(num_peers)]
        self.peer_kl = [Mean(name=f"peer{i}_kl") for i in range(num_peers)]
        # How sure each peer is and how far the peers agree: what the mimicry
        # changes, cheap to log beside it.
        self.peer_entropy = [Mean(name=f"peer{i}_entropy") for i in range(num_peers)]
        # (None for one student of a teacher: no pair to agree.)
        self.agreement = Mean(name="agreement") if num_peers > 1 else None
        self.peer_metrics = [
            [make(f"peer{i}_{name}") for name, make in factories]
            for i in range(num_peers)
        ]
        self.ensemble_metrics = [make(f"ensemble_{name}") for name, make in factories]
        # Which of the metrics (in order) read logits rather than probabilities.
        self.reads_logits = [_reads_logits(metric) for metric in self.ensemble_metrics]

    def all(self):
        """Every tracker and metric, in log order."""
        result = [self.loss]
        for i in range(len(self.peer_loss)):
            result += [self.peer_loss[i], self.peer_ce[i], self.peer_kl[i]]
            result += [self.peer_entropy[i]] + self.peer_metrics[i]
        agreement = [self.agreement] if self.agreement is not None else []
        return result + self.ensemble_metrics + agreement

    def update_losses(self, terms, num_labeled, num_examples):
        """Adds one batch's per-peer `PeerLossTerms` (local batch means).

        Weighting each mean by its own denominator makes the epoch value the
        mean over all examples, also when Keras sums the trackers over replicas.
        """
        for k, t in enumerate(terms):
            self.peer_loss[k].update_state(t.loss, sample_weight=num_examples)
            self.peer_ce[k].update_state(t.ce, sample_weight=num_labeled)
            self.peer_kl[k].update_state(t.kl, sample_weight=num_examples)
        self.loss.update_state(sum(t.loss for t in terms), sample_weight=num_examples)

    def update_diagnostics(self, probabilities, logits, num_examples):
        """Adds one batch's mean posterior entropy per peer (nats, on every
        example, labeled or not) and the peers' top-1 agreement: over all
        pairs of peers, the fraction of examples both give the same class."""
        for tracker, probs, z in zip(self.peer_entropy, probabilities, logits):
            entropy = -ops.sum(probs * ops.log_softmax(z, axis=-1), axis=-1)
            tracker.update_state(ops.mean(entropy), sample_weight=num_examples)
        if self.agreement is None:
            return
        classes = [ops.argmax(z, axis=-1) for z in logits]
        same = [
            ops.mean(ops.cast(ops.equal(a, b), "float32"))
            for i, a in enumerate(classes)
            for b in classes[i + 1 :]
        ]
        self.agreement.update_state(sum(same) / len(same), sample_weight=num_examples)

    def update_metrics(self, labels, mask, probabilities, logits):
        """Updates peer and ensemble metrics from per-peer probabilities (or
        float32 logits, for a metric configured with `from_logits=True`)."""
        for metrics, probs, z in zip(self.peer_metrics, probabilities, logits):
            for metric, reads_logits in zip(metrics, self.reads_logits):
                metric.update_state(
                    labels, z if reads_logits else probs, sample_weight=mask
                )
        ensemble = sum(probabilities) / len(probabilities)
        ensemble_logits = None
        for metric, reads_logits in zip(self.ensemble_metrics, self.reads_logits):
            if reads_logits and ensemble_logits is None:
                ensemble_logits = ops.log(ops.maximum(ensemble, _SMALLEST_PROBABILITY))
            metric.update_state(
                labels,
                ensemble_logits if reads_logits else ensemble,
                sample_weight=mask,
            )


def _reads_logits(metric):
    try:
        return bool(metric.get_config().get("from_logits", False))
    except NotImplementedError:  # A custom metric without a config.
        return False
