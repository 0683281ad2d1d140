"""Callbacks for long DML runs: exact-resume checkpoints, a NaN stop,
validation on the moving averages of the weights, and a one-line summary per
epoch."""

import csv
import json
import math
import os
import re
import time
import zipfile

import keras
import numpy as np

from keras_dml.cohort.progress import is_number
from keras_dml.files import atomic_write_text, save_model, writing, zip_bomb_problem

STATE_FILE = "state.json"


def _finite(logs):
    return all(math.isfinite(float(v)) for v in (logs or {}).values() if is_number(v))


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
        self.weight = None  # The first non-finite variable, when that stopped it.
        self._current_epoch = 0
        self._last_step = None

    @property
    def stopped(self):
        return self.epoch is not None

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._last_step = batch + 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.epoch, self.step = self._current_epoch + 1, batch + 1
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        # The loss can stay finite while the weights are not: a ReLU turns a
        # NaN activation into 0, so a diverged network still gives a loss of
        # ~1e31. Checked once per epoch (a copy of the weights), before the
        # checkpoint callback would save them.
        if self.stopped:
            return
        name = nonfinite_weight(self.model)
        if name is not None:
            self.epoch, self.step = epoch + 1, self._last_step
            self.weight = name
            self.model.stop_training = True

    def message(self):
        if self.weight is not None:
            return (
                f"The weights became NaN or infinite during epoch {self.epoch} "
                f"(found after its step {self.step}; first: {self.weight}), while "
                "the loss stayed finite; training stopped. Lower the learning rate "
                "or check the data."
            )
        return (
            f"The training loss became NaN or infinite at epoch {self.epoch}, step "
            f"{self.step}; training stopped. Lower the learning rate or check the "
            "data."
        )


class EvaluateOnAverages(keras.callbacks.Callback):
    """Validation during `fit` sees each peer's moving average of its weights
    (peer optimizers with `use_ema=True`), training the weights themselves.

    Keras's `SwapEMAWeights`, for a cohort whose peer optimizers may be
    wrapped in `LossScaleOptimizer`s (float16): it swaps the averages in
    before validation and out after it, so that checkpoints written at the
    end of the epoch hold the trained weights and the averages as they are.
    """

    def __init__(self):
        super().__init__()
        self._averages_in_model = False

    def on_test_begin(self, logs=None):
        if not self._averages_in_model:
            self.model.optimizer.swap_averages()
            self._averages_in_model = True

    def on_test_end(self, logs=None):
        if self._averages_in_model:
            self.model.optimizer.swap_averages()
            self._averages_in_model = False


def nonfinite_weight(model):
    """The path of `model`'s first variable holding NaN or inf, or None."""
    for variable in model.weights:
        if not np.isfinite(keras.ops.convert_to_numpy(variable)).all():
            return variable.path
    return None


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves everything needed to resume at the end of every epoch.

    `directory` holds `epoch-XXXX.keras` (the cohort's weights and every peer
    optimizer's state; the last `keep` epochs) and `state.json` (the completed
    epoch count, that file's name and the logs of every epoch so far). Each
    file is written under a temporary name and renamed, and `state.json` is
    replaced only after the checkpoint it names is complete, so a crash at any
    moment leaves a consistent checkpoint. `history.csv` beside it is
    rewritten from the same logs, so it never holds an epoch the checkpoint
    does not.

    Checkpoints are `.keras` archives rather than `.weights.h5`: Keras builds
    their HDF5 content in memory, so a full disk fails as a plain `OSError`.
    Writing `.weights.h5` straight to a full disk left HDF5 in a broken state
    that crashed the process at exit (segmentation fault).

    Call `restore(model)` before `fit` to load the last intact checkpoint; it
    returns the epoch to pass as `fit(initial_epoch=...)`.

    Raises (from `fit`):
        keras_dml.files.OutputError: a checkpoint could not be written (e.g.
            the disk is full); the message names the folder and the last
            intact checkpoint, and no temporary file is left.
    """

    def __init__(self, directory, csv_path=None, stop_on_nan=None, keep=2, log=print):
        super().__init__()
        self.directory = directory
        self.csv_path = csv_path
        self.stop_on_nan = stop_on_nan
        self.keep = keep
        self.log = log
        self.history = []
        self._epoch_start = None
        self._train_seconds = None
        os.makedirs(directory, exist_ok=True)

    @property
    def state_path(self):
        return os.path.join(self.directory, STATE_FILE)

    def read_state(self, directory=None):
        """The saved state dict, or None when nothing was saved yet.

        Raises:
            ValueError: `state.json` is unreadable (`restore` then falls back
                to the checkpoint files themselves).
        """
        directory = directory or self.directory
        path = os.path.join(directory, STATE_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                state = json.load(f)
            int(state["epoch"]), str(state["weights"])
            history = state.get("history")
            if history is not None and not (
                isinstance(history, list)
                and all(isinstance(row, dict) and "epoch" in row for row in history)
            ):
                raise ValueError(f'"history" is {type(history).__name__}, not rows')
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"{path}: unreadable checkpoint state ({error})"
            ) from error
        return state

    def restore(self, model, directory=None):
        """Loads the last intact checkpoint into `model` (compiled); returns the
        number of completed epochs it holds (0 when there is none).

        A checkpoint that is truncated or unreadable is named with its epoch,
        and the previous intact one is used instead (said so through `log`);
        when none is intact, training starts over from epoch 0 (also said).

        `directory` defaults to this callback's; multi-worker runs restore every
        worker from the chief's folder while only the chief writes there.
        """
        directory = directory or self.directory
        try:
            state = self.read_state(directory)
        except ValueError as error:
            self.log(f"warning: {error}; looking for the newest intact checkpoint.")
            state = {"epoch": None, "weights": None, "history": None}
        candidates = checkpoint_files(directory)
        if state is None and not candidates:
            return 0
        problems = []
        csv_path = os.path.join(os.path.dirname(directory), "history.csv")
        if state is not None and state["epoch"] is not None:
            # Files of epochs after the state's were never completed.
            candidates = [(e, n) for e, n in candidates if e <= int(state["epoch"])]
            if state["weights"] not in [name for _, name in candidates]:
                missing = os.path.join(directory, state["weights"])
                problems.append(f"{missing} (epoch {state['epoch']}) is missing")
        else:
            # No (readable) state: the epochs history.csv records are the
            # completed ones. A checkpoint written just before a kill, before
            # its epoch's row, is redone rather than resumed without its row.
            rows, damage = read_history_csv(csv_path)
            if damage:
                self.log(f"warning: {damage}.")
            recorded = max((r["epoch"] for r in rows), default=0)
            for epoch, name in candidates:
                if epoch > recorded:
                    self.log(
                        f"warning: {os.path.join(directory, name)} (epoch {epoch}) "
                        "has no record in history.csv (the run stopped while "
                        "saving it); that epoch is trained again."
                    )
            candidates = [(e, n) for e, n in candidates if e <= recorded]
        partly_loaded = False
        for epoch, name in candidates:
            path = os.path.join(directory, name)
            problem = checkpoint_problem(path)
            if problem is not None:
                problems.append(f"{path} (epoch {epoch}) is {problem}")
                continue
            try:
                model.load_weights(path)
            except (OSError, ValueError, KeyError, TypeError) as error:
                # Whole as an archive, but its weights are garbage or another
                # cohort's. An older intact checkpoint overwrites every
                # variable this one may have set.
                problems.append(
                    f"{path} (epoch {epoch}) does not load into this cohort "
                    f"({_first_line(error)})"
                )
                partly_loaded = True
                continue
            bad = nonfinite_weight(model)
            if bad is not None:  # Written before keras_dml checked weights.
                problems.append(f"{path} (epoch {epoch}) holds NaN or inf in {bad}")
                partly_loaded = True
                continue
            for message in problems:
                self.log(f"warning: {message}; resuming from epoch {epoch} ({path}).")
            history = (state or {}).get("history")
            if history is None:
                history = history_from_csv(csv_path)
            self.history = [row for row in history if row.get("epoch", 0) <= epoch]
            return epoch
        named = "; ".join(problems) if problems else f"{directory} holds no checkpoint"
        if partly_loaded:
            # Starting over needs the cohort's initial weights, which a failed
            # load may have changed in part.
            raise ValueError(
                f"{named}; no intact checkpoint is left. Remove {directory} to "
                "train that run from the start, or use another --model_dir."
            )
        self.log(
            f"warning: {named}; no intact checkpoint is left, so training starts "
            "over from epoch 0."
        )
        self.history = []
        return 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        # Validation starts: the epoch's training steps are done.
        if self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._epoch_start

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if (self.stop_on_nan is not None and self.stop_on_nan.stopped) or not _finite(
            logs
        ):
            return  # Keep the last good checkpoint.
        now = time.perf_counter()
        name = f"epoch-{epoch + 1:04d}.keras"
        path = os.path.join(self.directory, name)
        with writing(self.directory, self._intact_note):
            save_model(self.model, path)
            row = {
                "epoch": epoch + 1,
                **{k: float(v) for k, v in logs.items() if is_number(v)},
                "epoch_seconds": time.perf_counter() - self._epoch_start,
                # Training steps only: no validation, no checkpoint.
                "train_steps_seconds": self._train_seconds or now - self._epoch_start,
            }
            history = [h for h in self.history if h["epoch"] <= epoch] + [row]
            state = {"epoch": epoch + 1, "weights": name, "history": history}
            atomic_write_text(self.state_path, json.dumps(state, indent=1))
            self.history = history
            if self.csv_path:
                atomic_write_text(self.csv_path, history_csv(self.history))
        self._remove_old(keep_name=name)

    def _intact_note(self):
        try:
            state = self.read_state()
        except ValueError:
            state = None
        if state is None:
            return "No epoch had completed, so there is no checkpoint yet."
        return (
            f"The checkpoint of the last completed epoch ({state['epoch']}) is "
            f"intact in {self.directory}; free space and re-run the same command "
            "to resume."
        )

    def _remove_old(self, keep_name):
        saved = [name for _, name in checkpoint_files(self.directory)]
        for old in saved[self.keep :] if self.keep else saved:
            if old != keep_name:
                os.remove(os.path.join(self.directory, old))


_CHECKPOINT = re.compile(r"epoch-(\d+)\.(?:keras|weights\.h5)")


def checkpoint_files(directory):
    """`[(epoch, file name)]` of the checkpoints in `directory`, newest first
    (`.weights.h5` ones are from keras_dml 0.1 runs)."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        match = _CHECKPOINT.fullmatch(name)
        if match:
            found.append((int(match.group(1)), name))
    return sorted(found, reverse=True)


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def checkpoint_problem(path):
    """None if the checkpoint file at `path` reads back whole, else what is
    wrong with it ("truncated or corrupt (...)")."""
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                bomb = zip_bomb_problem(archive)  # Before anything is read.
                if bomb is not None:
                    return bomb
                bad = archive.testzip()  # Reads every member, checking its CRC.
                if bad is not None:
                    return f"corrupt (member {bad} fails its checksum)"
                if "model.weights.h5" not in archive.namelist():
                    return "not a Keras checkpoint (no model.weights.h5)"
        else:
            import h5py

            with h5py.File(path, "r") as f:
                f.visititems(
                    lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None
                )
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, ValueError) as error:
        return f"truncated or corrupt ({error})"
    return None


def history_from_csv(path):
    """Epoch logs from a `history.csv` (what `history_csv` writes): its intact
    rows, up to the first damaged one; [] when it is missing or unreadable."""
    return read_history_csv(path)[0]


def read_history_csv(path):
    """`(rows, problem)`: the intact rows of `history.csv` (epochs 1, 2, ...
    in order, every column a number), up to the first damaged row, and what
    was wrong after them (None when nothing was)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return [], None
    except (OSError, ValueError, csv.Error) as error:
        return [], f"{path} is unreadable ({error})"
    kept = []
    for row in rows:
        try:
            if None in row or None in row.values():  # Too many or too few cells.
                raise ValueError("a row of another length")
            parsed = {
                k: int(v) if k == "epoch" else float(v) for k, v in row.items() if v
            }
            if parsed.get("epoch") != len(kept) + 1:
                raise ValueError(f"epoch {parsed.get('epoch')} after {len(kept)}")
        except (ValueError, TypeError) as error:
            return kept, (
                f"{path} is damaged after epoch {len(kept)} ({error}); the rows "
                f"of epochs 1-{len(kept)} are kept"
                if kept
                else f"{path} is damaged from its first row ({error})"
            )
        kept.append(parsed)
    return kept, None


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
    accuracy on the validation data, called `split` ("test" or "validation"),
    or on the training data without validation, and the rate."""

    def __init__(self, epochs, metric="accuracy", print_fn=print, split="test"):
        super().__init__()
        self.epochs = epochs
        self.split = split
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
        split = self.split if prefix else "train"
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
