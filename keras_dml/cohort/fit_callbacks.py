"""What `MutualLearningModel.fit` and `evaluate` add to the user's callbacks so
that Keras's own callbacks work on a cohort's logs as on a plain model's.

- Monitoring callbacks (`EarlyStopping`, `ModelCheckpoint`,
  `ReduceLROnPlateau`) with `mode="auto"` learn from the cohort whether a
  logged name (`val_peer0_accuracy`, `val_ensemble_accuracy`,
  `val_peer1_loss`, ...) should be maximized or minimized: Keras looks for
  metrics only where a plain model compiles them, and raised "isn't able to
  automatically determine" for every per-peer name.
- `learning_rate` is logged as in plain Keras when a learning-rate callback
  runs (Keras logs `learning_rate_<optimizer name>` per peer optimizer).
- The progress bar is `keras_dml.cohort.progress.CohortProgbar` unless the user
  passes a `ProgbarLogger`.
"""

import re

import keras

from keras_dml.cohort.keras_internals import declared_direction
from keras_dml.cohort.progress import CohortProgbar

_LOSS_TERMS = re.compile(r"loss|peer\d+_(loss|ce|kl)")
_COHORT_METRIC = re.compile(r"(?:peer\d+|ensemble)_(.+)")
_PEER_RATE = "learning_rate_"


def metric_direction(metric):
    """ "max", "min" or None for a `keras.metrics.Metric`.

    Keras keeps a metric's direction privately ("up" / "down"; read by
    `keras_internals.declared_direction`).
    """
    direction = declared_direction(metric)
    return {"up": "max", "down": "min"}.get(direction)


def monitor_mode(cohort_metrics, monitor):
    """The direction ("max" / "min") of a logged name of a cohort, or None
    when it is not the cohort's (Keras then decides, or asks for `mode`)."""
    name = monitor.removeprefix("val_")
    if _LOSS_TERMS.fullmatch(name):
        return "min"
    if cohort_metrics is None:
        return None
    match = _COHORT_METRIC.fullmatch(name)
    if match is None:
        return None
    for metric in cohort_metrics.all():
        if metric.name == name:
            return metric_direction(metric)
    return None


class LearningRateLog(keras.callbacks.Callback):
    """Adds `learning_rate` to the epoch logs, as a plain Keras model has it
    when `LearningRateScheduler` or `ReduceLROnPlateau` runs.

    Those callbacks log `learning_rate_<optimizer name>` for each peer
    optimizer. When every peer has the same rate, the per-peer keys become one
    `learning_rate`; when the rates differ, they stay beside it, and
    `learning_rate` is peer 0's.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "learning_rate" in logs:
            return
        names = [f"{_PEER_RATE}{opt.name}" for opt in self.model.optimizer.optimizers]
        if not all(name in logs for name in names):
            return
        rates = [logs[name] for name in names]
        logs["learning_rate"] = rates[0]
        if len(set(map(float, rates))) == 1:
            for name in names:
                del logs[name]


def with_cohort_callbacks(model, callbacks, verbose):
    """The callback list a cohort's `fit` / `evaluate` runs with."""
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks  # fit's own validation pass: already set up.
    callbacks = list(callbacks or [])
    for callback in callbacks:
        if getattr(callback, "mode", None) == "auto" and isinstance(
            getattr(callback, "monitor", None), str
        ):
            mode = monitor_mode(model._cohort_metrics, callback.monitor)
            if mode is not None:
                callback.mode = mode
    # Right after the last learning-rate callback, so that the callbacks
    # after it (CSVLogger, TensorBoard, History) see `learning_rate`.
    rate_callbacks = (
        keras.callbacks.LearningRateScheduler,
        keras.callbacks.ReduceLROnPlateau,
    )
    last = max(
        (i for i, c in enumerate(callbacks) if isinstance(c, rate_callbacks)),
        default=len(callbacks) - 1,
    )
    callbacks.insert(last + 1, LearningRateLog())
    if verbose != 0 and not any(
        isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks
    ):
        # First, so that an epoch's line comes before what other callbacks
        # print at its end.
        callbacks.insert(0, CohortProgbar())
    return callbacks
