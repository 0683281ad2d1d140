"""A fit that checkpoints every epoch, resumes from the last intact
checkpoint and stops on NaN; and turning failed writes into one message."""

import contextlib
import os

import keras

from keras_dml import files
from keras_dml.backends import has_gpu
from keras_dml.callbacks import (
    EpochCheckpoint,
    EpochSummary,
    EvaluateOnAverages,
    StopOnNaN,
)
from keras_dml.cohort.progress import CohortProgbar


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


def fit_with_checkpoints(
    model,
    make_train_dataset,
    *,
    epochs,
    steps_per_epoch,
    write_to,
    restore_from,
    validation_data=None,
    validation_name="test",
    verbose=1,
    restore_scope=contextlib.nullcontext,
    callbacks=(),
):
    """Resumes from `restore_from/checkpoints` and trains up to `epochs`.

    Args:
        make_train_dataset: `initial_epoch -> dataset` yielding the epochs
            from `initial_epoch` on.
        write_to: where checkpoints/, history.csv and tensorboard/ go.
        restore_from: the run folder to resume from (the chief's).
        restore_scope: `() -> context` the checkpoint is restored in: the
            devices' scope, where multi-worker variables load collectively.
        validation_name: what `validation_data` is ("test" or "validation"),
            as the epoch summary names it.
        callbacks: more callbacks, run at each epoch's end before the
            checkpoint is written (so that it holds what they change).

    Returns:
        The logs of every completed epoch (a list of dicts with "epoch").

    Raises:
        TrainingDiverged: the loss became NaN; the last good checkpoint stays.
    """
    stop = StopOnNaN()
    with writing_outputs(write_to):
        checkpoint = EpochCheckpoint(
            os.path.join(write_to, "checkpoints"),
            csv_path=os.path.join(write_to, "history.csv"),
            stop_on_nan=stop,
        )
    with restore_scope():
        initial_epoch = checkpoint.restore(
            model, os.path.join(restore_from, "checkpoints")
        )
    if initial_epoch > epochs:
        raise ValueError(
            f"--epochs={epochs}, but {restore_from} already holds {initial_epoch} "
            "completed epochs."
        )
    if initial_epoch == epochs:
        with restore_scope():
            _use_averages(model)
        return checkpoint.history
    if initial_epoch:
        print(
            f"Resuming after epoch {initial_epoch} "
            f"(checkpoint in {os.path.join(restore_from, 'checkpoints')})."
        )
    with writing_outputs(write_to):
        model.fit(
            make_train_dataset(initial_epoch),
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation_data,
            # verbose=0 is silent, as in Keras. Otherwise one line per epoch,
            # EpochSummary's; the bar shows only while an epoch runs, and
            # comes first, so that it is erased before anything else prints.
            callbacks=([CohortProgbar(transient=True)] if verbose else [])
            + ([EvaluateOnAverages()] if model.optimizer.averages_weights else [])
            + list(callbacks)
            + [
                stop,
                checkpoint,
                keras.callbacks.TensorBoard(os.path.join(write_to, "tensorboard")),
            ]
            + ([EpochSummary(epochs, split=validation_name)] if verbose else []),
            verbose=verbose,
            shuffle=False,  # The datasets shuffle themselves, per (seed, epoch).
        )
    if stop.stopped:
        last = checkpoint.read_state()  # This process's last save.
        raise TrainingDiverged(
            f"{stop.message()} The last good checkpoint (epoch "
            f"{last['epoch'] if last else 0}) is in {checkpoint.directory}."
        )
    # Keras's fit ends so too; this also holds for a run resumed complete.
    with restore_scope():
        _use_averages(model)
    return checkpoint.history


def _use_averages(model):
    """Gives each peer with a moving average of its weights (`use_ema=True`)
    those averages: what the run evaluates, saves and exports. The checkpoints
    keep the trained weights and the averages, so a run resumed with more
    epochs continues exactly."""
    if model.optimizer.averages_weights:
        model.optimizer.finalize_variable_values(model.trainable_weights)


def save_model(model, path):
    """`model.save` through a temporary file and a rename."""
    files.save_model(model, path)


def checkpoint_note(write_to):
    """What is intact after a failed write in a run writing to `write_to`."""
    directory = os.path.join(write_to, "checkpoints")
    return lambda: EpochCheckpoint(directory, log=lambda _: None)._intact_note()


@contextlib.contextmanager
def writing_outputs(write_to):
    """Turns a failed write (full disk, read-only folder) into one
    `keras_dml.files.OutputError` naming the folder and the last intact
    checkpoint."""
    with files.writing(write_to, checkpoint_note(write_to)):
        yield


def mixed_precision_policy(enabled):
    if not enabled:
        return "float32"
    # float16 needs a GPU to be fast; CPUs with AVX512-BF16/AMX run bfloat16.
    return "mixed_float16" if has_gpu() else "mixed_bfloat16"
