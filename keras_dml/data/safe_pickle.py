"""Loading the CIFAR python-format pickles without letting them run code.

`pickle.load` calls whatever callables a file names, so a crafted "CIFAR"
file can run any command. The real files only need numpy's array
reconstruction, so the unpickler resolves exactly those names and refuses
every other one before anything is called.
"""

import io
import pickle

import numpy as np


def _numpy_reconstruct():
    # numpy 2 moved `numpy.core` to `numpy._core`; files written by numpy 1
    # (all released CIFAR archives) name the old module.
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


def _latin1_encode():
    # Python 3 writes a bytes object into a protocol-2 pickle as
    # `_codecs.encode(text, "latin1")`. Only that codec is allowed: another
    # could be asked to decompress or transform arbitrary data.
    def encode(text, encoding="utf-8", errors="strict"):
        if (
            not isinstance(text, str)
            or encoding not in ("latin1", "latin-1")
            or errors != "strict"
        ):
            raise _ForbiddenGlobal(
                f"the file asks to call _codecs.encode with {encoding!r}, which "
                "no CIFAR file needs"
            )
        return text.encode("latin1")

    return encode


_ALLOWED = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise _ForbiddenGlobal(
                f"the file asks to call {module}.{name}, which no CIFAR file needs"
            )
        return resolve()


def load_numpy_pickle(data, filename):
    """Unpickles `data` (bytes) allowing nothing but numpy arrays and builtins.

    Python 2 pickles (the CIFAR files) are decoded with `encoding="bytes"`, so
    dict keys come back as bytes (`b"data"`), as CIFAR's own loader expects.

    Raises:
        ValueError: naming `filename`, if the pickle is damaged or asks for
            anything else (nothing it names is called).
    """
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _ForbiddenGlobal as error:
        raise ValueError(
            f"{filename}: refused to load this pickle: {error}. The file is "
            "damaged or was crafted to run code; nothing in it was run."
        ) from error
    except Exception as error:  # any damage: EOF, bad opcodes, bad array state
        raise ValueError(
            f"{filename}: not a readable CIFAR pickle, or truncated ({error})."
        ) from error
