"""A progress bar that fits a terminal for a cohort of any size.

Keras's progress bar prints every logged value as `name: value`. A cohort logs
4 values per peer plus one per metric and per peer and the ensemble, so a
2-peer run with validation wrote 430+ characters per line; a terminal wraps
it and the redrawn line scrolls instead of updating. This bar shows the
loss and the headline metric (the first compiled metric; else each peer's
loss) as one entry with a value per peer and the ensemble, validation on a
second line at the end of the epoch. Every value stays in the logs, so the
history, `history.csv` and TensorBoard keep them all.
"""

import math
import re
import sys
import time

import keras

from keras_dml.callbacks import is_number

_PEER_KEY = re.compile(r"peer(\d+)_(.+)")


def headline_values(logs, metric, prefix=""):
    """`[peer0, peer1, ..., ensemble]` values of `metric` in `logs` (missing
    entries left out), for keys `<prefix>peer{i}_<metric>`,
    `<prefix>ensemble_<metric>`."""
    peers = []
    for key, value in logs.items():
        if not key.startswith(prefix):
            continue
        match = _PEER_KEY.fullmatch(key[len(prefix) :])
        if match and match.group(2) == metric:
            peers.append((int(match.group(1)), value))
    values = [v for _, v in sorted(peers)]
    ensemble = logs.get(f"{prefix}ensemble_{metric}")
    return values, ensemble


def _number(value):
    value = float(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4f}"


def _duration(seconds):
    if seconds >= 3600:
        return (
            f"{seconds // 3600:.0f}:{seconds % 3600 // 60:02.0f}:{seconds % 60:02.0f}"
        )
    if seconds >= 60:
        return f"{seconds // 60:.0f}:{seconds % 60:02.0f}"
    return f"{seconds:.0f}s"


def _per_step(seconds):
    if seconds >= 1:
        return f"{seconds:.1f}s/step"
    return f"{1000 * seconds:.0f}ms/step"


class CohortProgbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, compact for a cohort (the default of
    `MutualLearningModel.fit` and `evaluate`).

    Each line shows the loss (summed over peers) and the headline metric with
    one value per peer, in peer order, then the ensemble's:

        781/781 ━━━━━━━━━━━━ 142s 182ms/step - loss 7.2310 - accuracy 0.3120 ...
            val_loss 7.0012 - val_accuracy 0.3330 0.3150 ens 0.3520

    (the first line goes on: `... 0.2981 ens 0.3301`).

    Pass `keras.callbacks.ProgbarLogger()` in `callbacks` for Keras's own bar
    with every term.

    Args:
        metric: the metric to show (its name without `peer{i}_`); None shows
            the first one the logs have in `peer0_<name>` form other than the
            loss terms, else each peer's loss.
        width: width of the bar in characters.
    """

    _LOSS_TERMS = ("loss", "ce", "kl")

    def __init__(self, metric=None, width=12):
        super().__init__()
        self.metric = metric
        self.width = width
        # A line is redrawn in place on a terminal or in a notebook; written
        # to a file or pipe, only each epoch's final line is printed.
        self._dynamic = (
            hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
        ) or "ipykernel" in sys.modules
        self._start = None
        self._last_draw = 0.0
        self._previous_width = 0
        self._in_fit = False

    # Keras calls set_params with {"verbose", "epochs", "steps"}.
    def set_params(self, params):
        verbose = params.get("verbose", 1)
        self.verbose = 1 if verbose == "auto" else verbose
        self.epochs = params.get("epochs", 1)
        self.target = params.get("steps")

    def on_train_begin(self, logs=None):
        self._in_fit = True

    def on_epoch_begin(self, epoch, logs=None):
        self._begin()
        if self.verbose and self.epochs > 1:
            self._write(f"Epoch {epoch + 1}/{self.epochs}\n")

    def on_test_begin(self, logs=None):
        if not self._in_fit:
            self._begin()

    def on_predict_begin(self, logs=None):
        self._begin()

    def on_train_batch_end(self, batch, logs=None):
        self._draw(batch + 1, logs, final=False)

    def on_test_batch_end(self, batch, logs=None):
        if not self._in_fit:
            self._draw(batch + 1, logs, final=False)

    def on_predict_batch_end(self, batch, logs=None):
        self._draw(batch + 1, None, final=False)

    def on_epoch_end(self, epoch, logs=None):
        self._draw(self._seen, logs, final=True)

    def on_test_end(self, logs=None):
        if not self._in_fit:
            self._draw(self._seen, logs, final=True)

    def on_predict_end(self, logs=None):
        self._draw(self._seen, None, final=True)

    # ------------------------------------------------------------- drawing

    def _begin(self):
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._previous_width = 0
        self._seen = 0

    def _headline(self, logs):
        if self.metric is not None:
            return self.metric
        for key in logs:
            match = _PEER_KEY.fullmatch(key)
            if match and match.group(2) not in self._LOSS_TERMS:
                return match.group(2)
        return "loss"

    def _entries(self, logs, prefix):
        """`name value` texts for the loss and the headline metric."""
        entries = []
        if f"{prefix}loss" in logs:
            entries.append(f"{prefix}loss {_number(logs[f'{prefix}loss'])}")
        metric = self._headline(logs)
        peers, ensemble = headline_values(logs, metric, prefix)
        values = [_number(v) for v in peers]
        if ensemble is not None:
            values.append(f"ens {_number(ensemble)}")
        if values:
            name = f"{prefix}{metric}" if metric != "loss" else f"{prefix}peer loss"
            entries.append(f"{name} {' '.join(values)}")
        return entries

    def _draw(self, current, logs, final):
        if not self.verbose or self._start is None:
            return
        self._seen = max(self._seen, current)
        now = time.perf_counter()
        if self.verbose != 1 and not final:
            return
        if not final and now - self._last_draw < 0.05:
            return
        self._last_draw = now
        logs = {k: v for k, v in (logs or {}).items() if is_number(v)}
        elapsed = now - self._start
        target = self.target
        if target is None and final:
            target = current
        if target:
            digits = int(math.log10(target)) + 1
            count = f"{current:{digits}d}/{target}"
        else:
            count = f"{current}/Unknown"
        per_step = elapsed / max(current, 1)
        if self.verbose == 1:
            filled = int(self.width * current / target) if target else 0
            bar = "━" * filled + "─" * (self.width - filled) if target else ""
            timing = (
                f"{_duration(elapsed)} {_per_step(per_step)}"
                if final or not target
                else f"{_duration(per_step * (target - current))} {_per_step(per_step)}"
            )
            head = f"{count} {bar} {timing}".replace("  ", " ")
        else:
            head = f"{count} - {_duration(elapsed)} {_per_step(per_step)}"
        line = " - ".join([head] + self._entries(logs, ""))
        text = line
        if self._dynamic and self.verbose == 1:
            text = "\r" + line + " " * max(0, self._previous_width - len(line))
            self._previous_width = len(line)
        elif not final:
            return  # Without a redrawable line, print only the final one.
        if final:
            validation = self._entries(logs, "val_")
            text += "\n"
            if validation:
                text += " " * min(len(count) + 1, 10) + " - ".join(validation) + "\n"
        self._write(text)

    def _write(self, text):
        sys.stdout.write(text)
        sys.stdout.flush()
