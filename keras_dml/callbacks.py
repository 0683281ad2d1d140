"""Callbacks for long DML runs: exact-resume checkpoints, a NaN stop, and a
one-line summary per epoch."""

import json
import math
import os
import re
import time

import keras

from keras_dml.files import atomic_write_text

STATE_FILE = "state.json"


def _finite(logs):
    return all(math.isfinite(float(v)) for v in (logs or {}).values() if _is_number(v))


def _is_number(value):
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN` it remembers where (`epoch`,
    `step`, 1-based) so the caller can report it and exit non-zero, and it
    tells `EpochCheckpoint` not to save that epoch.
    """

    def __init__(self):
        super().__init__()
        self.epoch = None
        self.step = None
        self._current_epoch = 0

    @property
    def stopped(self):
        return self.epoch is not None

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.epoch, self.step = self._current_epoch + 1, batch + 1
            self.model.stop_training = True

    def message(self):
        return (
            f"The training loss became NaN or infinite at epoch {self.epoch}, step "
            f"{self.step}; training stopped. Lower the learning rate or check the "
            "data."
        )


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves everything needed to resume at the end of every epoch.

    `directory` holds `epoch-XXXX.weights.h5` (the cohort's weights and every
    peer optimizer's state) and `state.json` (the completed epoch count, that
    file's name and the logs of every epoch so far). Each file is written
    under a temporary name and renamed, and `state.json` is replaced only after
    the weights it names are complete, so a crash at any moment leaves a
    consistent checkpoint. `history.csv` beside it is rewritten from the same
    logs, so it never holds an epoch the checkpoint does not.

    Call `restore(model)` before `fit` to load the last checkpoint; it returns
    the epoch to pass as `fit(initial_epoch=...)`.
    """

    def __init__(self, directory, csv_path=None, stop_on_nan=None, keep=1):
        super().__init__()
        self.directory = directory
        self.csv_path = csv_path
        self.stop_on_nan = stop_on_nan
        self.keep = keep
        self.history = []
        self._epoch_start = None
        os.makedirs(directory, exist_ok=True)

    @property
    def state_path(self):
        return os.path.join(self.directory, STATE_FILE)

    def read_state(self, directory=None):
        """The saved state dict, or None when nothing was saved yet."""
        directory = directory or self.directory
        path = os.path.join(directory, STATE_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                state = json.load(f)
            weights = os.path.join(directory, state["weights"])
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"{path}: unreadable checkpoint state ({error}). Delete the "
                "checkpoint folder to start over."
            ) from error
        if not os.path.isfile(weights):
            raise ValueError(f"{path}: names {weights}, which is missing.")
        return state

    def restore(self, model, directory=None):
        """Loads the last checkpoint into `model` (compiled); returns the number
        of completed epochs (0 when there is none).

        `directory` defaults to this callback's; multi-worker runs restore every
        worker from the chief's folder while only the chief writes there.
        """
        directory = directory or self.directory
        state = self.read_state(directory)
        if state is None:
            return 0
        model.load_weights(os.path.join(directory, state["weights"]))
        self.history = list(state.get("history", []))
        return int(state["epoch"])

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if (self.stop_on_nan is not None and self.stop_on_nan.stopped) or not _finite(
            logs
        ):
            return  # Keep the last good checkpoint.
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        path = os.path.join(self.directory, name)
        temporary = os.path.join(self.directory, f".{name}.tmp.weights.h5")
        self.model.save_weights(temporary, overwrite=True)
        os.replace(temporary, path)
        row = {
            "epoch": epoch + 1,
            **{k: float(v) for k, v in logs.items() if _is_number(v)},
            "epoch_seconds": time.perf_counter() - self._epoch_start,
        }
        self.history = [h for h in self.history if h["epoch"] <= epoch] + [row]
        state = {"epoch": epoch + 1, "weights": name, "history": self.history}
        atomic_write_text(self.state_path, json.dumps(state, indent=1))
        if self.csv_path:
            atomic_write_text(self.csv_path, history_csv(self.history))
        self._remove_old(keep_name=name)

    def _remove_old(self, keep_name):
        saved = sorted(
            n
            for n in os.listdir(self.directory)
            if n.startswith("epoch-") and n.endswith(".weights.h5")
        )
        for old in saved[: -self.keep] if self.keep else saved:
            if old != keep_name:
                os.remove(os.path.join(self.directory, old))


def history_csv(history):
    """Epoch logs (a list of dicts) as CSV text: one row per epoch, one column
    per logged value, in first-seen order."""
    columns = []
    for row in history:
        columns += [k for k in row if k not in columns]
    lines = [",".join(columns)]
    for row in history:
        lines.append(",".join(_csv_value(row.get(c, "")) for c in columns))
    return "\n".join(lines) + "\n"


def _csv_value(value):
    return repr(value) if isinstance(value, float) else str(value)


class EpochSummary(keras.callbacks.Callback):
    """Prints one line per epoch: time, loss, each peer's and the ensemble's
    test accuracy (or training accuracy without validation) and the rate."""

    def __init__(self, epochs, metric="accuracy", print_fn=print):
        super().__init__()
        self.epochs = epochs
        self.metric = metric
        self.print_fn = print_fn
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        prefix = "val_" if f"val_ensemble_{self.metric}" in logs else ""
        pattern = re.compile(rf"{prefix}peer(\d+)_{re.escape(self.metric)}")
        peers = sorted(  # peer2 before peer10.
            (int(m.group(1)), m.group(0))
            for m in map(pattern.fullmatch, logs)
            if m is not None
        )
        scores = [f"peer{i} {100 * float(logs[k]):.2f}%" for i, k in peers]
        ensemble = logs.get(f"{prefix}ensemble_{self.metric}")
        if ensemble is not None:
            scores.append(f"ensemble {100 * float(ensemble):.2f}%")
        split = "test" if prefix else "train"
        rate = _learning_rate(self.model)
        seconds = time.perf_counter() - self._start
        self.print_fn(
            f"epoch {epoch + 1}/{self.epochs}: {seconds:.1f}s, "
            f"loss {float(logs.get('loss', float('nan'))):.4f}, {split} {self.metric} "
            + ", ".join(scores)
            + (f", lr {rate:.4g}" if rate is not None else "")
        )


def _learning_rate(model):
    try:
        optimizer = model.optimizer.optimizers[0]
        rate = optimizer.learning_rate
        return float(rate(optimizer.iterations) if callable(rate) else rate)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
