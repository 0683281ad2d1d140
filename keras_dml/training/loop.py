"""The parts every training script shares: a run folder that resumes only
the same run, and a fit that checkpoints every epoch and stops on NaN."""

import contextlib
import dataclasses
import json
import os

import keras

from keras_dml import files
from keras_dml.callbacks import EpochCheckpoint, EpochSummary, StopOnNaN
from keras_dml.data.epochs import resolve_seed
from keras_dml.training import reports
from keras_dml.training.strategies import check_seed, make_strategy, writable_dir


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


def check_resume(config, resumable_changes):
    """`config` with the stored seed when resuming; raises ValueError if
    `config.model_dir` holds a run whose other settings differ."""
    path = os.path.join(config.model_dir, "config.json")
    if not os.path.exists(path):
        return config
    with open(path) as f:
        stored = json.load(f)
    current = dataclasses.asdict(config)
    if config.seed is None:
        current["seed"] = stored.get("seed")
    # A setting added after the run was stored had its default value then.
    for field in dataclasses.fields(config):
        if field.name not in stored and field.default is not dataclasses.MISSING:
            stored[field.name] = field.default
    different = {
        key: (stored.get(key), value)
        for key, value in current.items()
        if key not in resumable_changes
        and _comparable(stored.get(key)) != _comparable(value)
    }
    if different:
        listed = "; ".join(
            f"--{k}: stored {a!r}, given {b!r}" for k, (a, b) in different.items()
        )
        raise ValueError(
            f"{config.model_dir} holds a run with other settings ({listed}). Re-run "
            "with the same flags to resume it, or use another --model_dir."
        )
    return dataclasses.replace(config, seed=current["seed"])


def _comparable(value):
    return list(value) if isinstance(value, tuple) else value


@contextlib.contextmanager
def prepared_run(config, resumable_changes):
    """Everything a run does before building its model, and undoes after.

    Validates `config`, creates its strategy (first: the multi-worker runtime
    must start before other ops), refuses to resume a different run, fixes
    the seed (drawn once and stored in config.json when not given), seeds
    Keras, enables deterministic ops on request and sets the dtype policy.

    Yields:
        `(config, strategy, write_to)`: the config with its seed, the
        strategy, and the folder this process writes to (`model_dir` on the
        chief, a private temporary folder on other workers).
    """
    config.validate()
    files.ensure_writable_dir(config.model_dir, "--model_dir")
    strategy = make_strategy(config.strategy)
    config = check_resume(config, resumable_changes)
    check_seed(strategy, config.seed)
    config = dataclasses.replace(config, seed=resolve_seed(config.seed))
    write_to = writable_dir(strategy, config.model_dir)
    if write_to == config.model_dir:
        for path in files.remove_stale_temporaries(config.model_dir):
            print(f"Removed {path}, left by an interrupted run.")
    with writing_outputs(write_to):
        write_config(config, write_to)
    if config.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(
        mixed_precision_policy(config.mixed_precision)
    )
    try:
        yield config, strategy, write_to
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def write_config(config, write_to):
    reports.write_json(
        os.path.join(write_to, "config.json"), dataclasses.asdict(config)
    )


def fit_with_checkpoints(
    model,
    make_train_dataset,
    *,
    epochs,
    steps_per_epoch,
    write_to,
    restore_from,
    validation_data=None,
    verbose=1,
):
    """Resumes from `restore_from/checkpoints` and trains up to `epochs`.

    Args:
        make_train_dataset: `initial_epoch -> dataset` yielding the epochs
            from `initial_epoch` on.
        write_to: where checkpoints/, history.csv and tensorboard/ go.
        restore_from: the run folder to resume from (the chief's).

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
    initial_epoch = checkpoint.restore(model, os.path.join(restore_from, "checkpoints"))
    if initial_epoch > epochs:
        raise ValueError(
            f"--epochs={epochs}, but {restore_from} already holds {initial_epoch} "
            "completed epochs."
        )
    if initial_epoch == epochs:
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
            callbacks=[
                stop,
                checkpoint,
                keras.callbacks.TensorBoard(os.path.join(write_to, "tensorboard")),
                EpochSummary(epochs),
            ],
            verbose=verbose,
            shuffle=False,  # The datasets shuffle themselves, per (seed, epoch).
        )
    if stop.stopped:
        last = checkpoint.read_state()  # This process's last save.
        raise TrainingDiverged(
            f"{stop.message()} The last good checkpoint (epoch "
            f"{last['epoch'] if last else 0}) is in {checkpoint.directory}."
        )
    return checkpoint.history


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
    import tensorflow as tf

    if not enabled:
        return "float32"
    # float16 needs a GPU to be fast; CPUs with AVX512-BF16/AMX run bfloat16.
    return (
        "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    )
