"""Loading a saved cohort or peer (`.keras`) with errors that name the file.

Keras answers a truncated, empty or random-bytes `.keras` file with "File not
found" although the file exists; these checks say what is wrong with it.
"""

import os
import zipfile

import keras

from keras_dml.files import zip_bomb_problem


def load_keras_file(path, flag="path"):
    """`keras.saving.load_model(path, compile=False)` for a `.keras` file.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is a folder, or not a whole `.keras` archive
            (truncated, empty, another format), or holds a model that cannot
            be rebuilt; the message names the flag and the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{flag}={path} does not exist (expected a .keras file)."
        )
    if os.path.isdir(path):
        raise ValueError(f"{flag}={path} is a folder; expected a .keras file.")
    problem = keras_file_problem(path)
    if problem is not None:
        raise ValueError(
            f"{flag}={path} is not a readable .keras file: {problem}. Save or copy "
            "it again."
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # Whatever rebuilding the model raised.
        raise ValueError(
            f"{flag}={path}: the model in it cannot be rebuilt "
            f"({type(error).__name__}: {error})."
        ) from error


def keras_file_problem(path):
    """None if `path` is a whole `.keras` archive, else what is wrong."""
    size = os.path.getsize(path)
    if size == 0:
        return "it is empty"
    try:
        with zipfile.ZipFile(path) as archive:
            bomb = zip_bomb_problem(archive)  # Before testzip reads anything.
            if bomb is not None:
                return bomb
            bad = archive.testzip()
            names = set(archive.namelist())
    except zipfile.BadZipFile:
        return f"it is not a zip archive ({size:,} bytes; truncated or another format)"
    except (OSError, EOFError) as error:
        return f"it cannot be read ({error})"
    if bad is not None:
        return f"member {bad} is corrupt"
    if "config.json" not in names:
        return "it holds no model config (config.json)"
    return None
