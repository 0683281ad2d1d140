"""A progress bar that fits the terminal it finds, for a cohort of any size.

Keras's progress bar prints every logged value as `name: value`. A cohort logs
4 values per peer plus one per metric and per peer and the ensemble, so a
2-peer run with validation wrote 430+ characters per line; a terminal wraps
it and the redrawn line scrolls instead of updating. This bar shows, in
Keras's `name: value` format, the loss and the headline metric (the first
compiled metric; else each peer's loss) with a value per peer, named, and
the ensemble's, and the same for validation at the end of the epoch. On a
terminal each line is made to fit its width (`shutil.get_terminal_size`,
read at every redraw): shorter names, fewer digits, then only the ensemble;
written to a file or a pipe it prints one line per epoch, whole, and no
carriage returns, as Keras's bar does. Every value stays in the logs, so the
history, `history.csv` and TensorBoard keep them all.
"""

import math
import re
import shutil
import sys
import time

import keras

_PEER_KEY = re.compile(r"peer(\d+)_(.+)")
# Shorter names for narrow terminals.
_SHORT_NAMES = {
    "accuracy": "acc",
    "sparse_categorical_accuracy": "acc",
    "crossentropy": "xent",
    "sparse_categorical_crossentropy": "xent",
    "sparse_top_k_categorical_accuracy": "top_k",
}


def is_number(value):
    """Whether a logged value is a number (logs also hold strings, arrays)."""
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def headline_values(logs, metric, prefix=""):
    """`([(i, peer i's value), ...], ensemble value or None)` of `metric` in
    `logs`, peers in numeric order (missing entries left out), for keys
    `<prefix>peer{i}_<metric>`, `<prefix>ensemble_<metric>`."""
    peers = []
    for key, value in logs.items():
        if not key.startswith(prefix):
            continue
        match = _PEER_KEY.fullmatch(key[len(prefix) :])
        if match and match.group(2) == metric:
            peers.append((int(match.group(1)), value))
    return sorted(peers), logs.get(f"{prefix}ensemble_{metric}")


def _number(value, digits=4):
    value = float(value)
    if value != 0 and abs(value) < 10 ** (1 - digits):
        return f"{value:.{max(digits - 2, 1)}e}"
    return f"{value:.{digits}f}"


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

    Each epoch ends with one line: the loss (summed over peers) and the
    headline metric with one value per peer, in peer order, then the
    ensemble's, and the same for validation:

        Epoch 1/10
        781/781 ━━━━━━━━━━━━ 142s 182ms/step - loss: 7.2310 - accuracy: peer0
        0.3120, peer1 0.2981, ensemble 0.3301 - val_loss: 7.0012 - ...

    (one line, wrapped here). On a terminal narrower than the line it
    becomes `acc: p0 0.312, p1 0.298, ens 0.330`, then only the ensemble,
    then is cut, so that it never wraps.

    Pass `keras.callbacks.ProgbarLogger()` in `callbacks` for Keras's own bar
    with every term.

    Args:
        metric: the metric to show (its name without `peer{i}_`); None shows
            the first one the logs have in `peer{i}_<name>` form other than
            the loss terms, else each peer's loss.
        width: width of the bar in characters.
        transient: show the bar only while an epoch runs, on a terminal, and
            erase it at the epoch's end (nothing in a file): for a caller
            that prints its own line per epoch, as the scripts do.
    """

    _LOSS_TERMS = ("loss", "ce", "kl", "entropy")

    def __init__(self, metric=None, width=12, transient=False):
        super().__init__()
        self.metric = metric
        self.width = width
        self.transient = transient
        # A line is redrawn in place on a terminal or in a notebook; written
        # to a file or pipe, only each epoch's final line is printed.
        self._dynamic = (
            hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
        ) or "ipykernel" in sys.modules
        self._start = None
        self._last_draw = 0.0
        self._previous_width = 0
        self._in_fit = False
        self._epoch = None

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
        self._epoch = epoch
        if self.verbose and self.epochs > 1 and not self.transient:
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

    def _entries(self, logs, prefix, level=0):
        """`name: value` texts for the loss and the headline metric.

        `level` 0 names everything in full; 1 shortens the names and the
        numbers; 2 also leaves out the peers, keeping the ensemble's value
        (each peer's where there is no ensemble)."""
        digits = 4 if level == 0 else 3
        entries = []
        if f"{prefix}loss" in logs:
            entries.append(f"{prefix}loss: {_number(logs[f'{prefix}loss'], digits)}")
        metric = self._headline(logs)
        peers, ensemble = headline_values(logs, metric, prefix)
        peer, ens = ("peer", "ensemble") if level == 0 else ("p", "ens")
        values = [f"{peer}{i} {_number(v, digits)}" for i, v in peers]
        if ensemble is not None:
            if level >= 2:
                values = []
            values.append(f"{ens} {_number(ensemble, digits)}")
        if values:
            name = "peer_loss" if metric == "loss" else metric
            if level:
                name = _SHORT_NAMES.get(name, name)
            entries.append(f"{prefix}{name}: {', '.join(values)}")
        return entries

    def _line(self, head, logs, final, columns):
        """The text, made to fit `columns` characters a line (None: one line
        of any length). On a terminal too narrow for the epoch's final line,
        validation goes on a second line."""
        for level in range(3):
            entries = self._entries(logs, "", level)
            if final:
                entries += self._entries(logs, "val_", level)
            line = " - ".join([head, *entries])
            if columns is None or len(line) <= columns:
                return line
        validation = self._entries(logs, "val_") if final else []
        if not validation:
            return self._fit(head + " - ", logs, "", columns)
        indent = " " * min(len(head.split()[0]) + 1, 10)
        return (
            self._fit(head + " - ", logs, "", columns)
            + "\n"
            + self._fit(indent, logs, "val_", columns)
        )

    def _fit(self, start, logs, prefix, columns):
        for level in range(3):
            entries = self._entries(logs, prefix, level)
            line = start + " - ".join(entries) if entries else start.rstrip(" -")
            if len(line) <= columns:
                return line
        return line[: columns - 1] + "…"

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
        redraw = self._dynamic and self.verbose == 1
        columns = None
        if redraw:
            # One column spare: some terminals wrap a line that fills the width.
            columns = max(shutil.get_terminal_size((80, 24)).columns - 1, 20)
        if self.verbose == 1:
            # A shorter bar on a narrow terminal leaves room for the values.
            width = self.width if columns is None else min(self.width, columns // 10)
            filled = int(width * current / target) if target else 0
            bar = "━" * filled + "─" * (width - filled) if target else ""
            timing = (
                f"{_duration(elapsed)} {_per_step(per_step)}"
                if final or not target
                else f"{_duration(per_step * (target - current))} {_per_step(per_step)}"
            )
            head = f"{count} {bar} {timing}".replace("  ", " ")
        else:
            head = f"{count} - {_duration(elapsed)} {_per_step(per_step)}"
        if self.transient and self._epoch is not None and self.epochs > 1:
            head = f"Epoch {self._epoch + 1}/{self.epochs} {head}"
        if self.transient and (final or not redraw):
            if redraw and self._previous_width:
                self._write("\r" + " " * self._previous_width + "\r")
            self._previous_width = 0
            return
        if not redraw and not final:
            return  # Without a redrawable line, print only the final one.
        line = self._line(head, logs, final, columns)
        text = line
        if redraw:
            # Blanks over what is left of a longer previous line.
            blank = max(0, min(self._previous_width, columns) - len(line))
            text = "\r" + line + " " * blank
            self._previous_width = len(line)
        if final:
            text += "\n"
        self._write(text)

    def _write(self, text):
        sys.stdout.write(text)
        sys.stdout.flush()
