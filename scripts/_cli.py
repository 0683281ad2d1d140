"""What every script does around its `main`: a quiet keras_dml start-up,
and expected failures as one line on stderr with exit code 1.

Import this first in a script, before anything that imports TensorFlow: the
start-up lines TensorFlow prints while it loads (oneDNN notice, "Could not
find cuda drivers", "failed call to cuInit" on machines without a GPU) come
from its C++ core before Python can configure logging, so they are captured
from the file descriptor and dropped. `--verbosity=N` (absl's flag) keeps
them all.
"""

import faulthandler
import os
import re
import sys
import threading
import warnings

_NOISE = re.compile(
    r"All log messages before absl::InitializeLog"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers"
    r"|failed call to cuInit"
    r"|cpu_feature_guard"
    r"|This TensorFlow binary is optimized"
    r"|To enable the following instructions"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning"
    # PyTorch's CUDA build on a machine without a GPU (a UserWarning, 2 lines).
    r"|CUDA initialization: Unexpected error from cudaGetDeviceCount"
    r"|return torch._C._cuda_getDeviceCount\(\) > 0"
)


_ASSERTION = re.compile(r"assertion failed: \[(.*?)\]\s*$", re.MULTILINE)


def _verbosity_requested(argv):
    return any(a.split("=")[0] in ("--verbosity", "-v", "--v") for a in argv[1:])


def quiet_tensorflow(argv=None):
    """Imports keras_dml (and so TensorFlow, and the libraries that must load
    before it) with TensorFlow's start-up noise filtered out of stderr.

    Anything else printed meanwhile (a real error) is passed on as it comes,
    so a crash during start-up is never silent: a fatal signal's Python
    traceback (faulthandler) goes to the real stderr too. Later C++ log lines
    below ERROR are hidden by TF_CPP_MIN_LOG_LEVEL=2 unless the environment
    sets another level or `--verbosity` is given.
    """
    argv = sys.argv if argv is None else argv
    if "tensorflow" in sys.modules:
        return  # Already loaded (a thin alias imported the script it runs).
    if _verbosity_requested(argv):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    filtered_stderr(_load_keras_dml)


def _load_keras_dml():
    # keras_dml, not TensorFlow, first: it loads what must precede TensorFlow.
    import keras_dml  # noqa: F401

    tensorflow = sys.modules["tensorflow"]  # Loaded by keras_dml.
    tensorflow.config.list_physical_devices()  # Device set-up prints too.


def filtered_stderr(load):
    """Runs `load()` with file descriptor 2 going through a filter that drops
    the lines `_NOISE` matches and passes every other line on at once.

    The lines come from C++ before Python can configure logging, hence the
    file descriptor. The filter is a forked process where the platform has
    fork: a segmentation fault in `load()` closes the pipe, and the filter
    still passes on all it was sent, then exits; a thread would die with
    the process and lose the last lines. faulthandler writes the dying
    process's Python traceback to the real stderr.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    real_stderr = os.fdopen(os.dup(saved), "w")
    faulthandler.enable(file=real_stderr)
    read_end, write_end = os.pipe()
    forwarder = _start_filter(read_end, write_end, saved)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        load()
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # Closes the pipe's last write end: the filter ends.
        forwarder()
        os.close(saved)
        faulthandler.enable(file=sys.stderr)
        real_stderr.close()


def _forward(read_end, out):
    with os.fdopen(read_end, "rb", closefd=False) as lines:
        for line in lines:
            if not _NOISE.search(line.decode("utf-8", errors="replace")):
                os.write(out, line)


def _start_filter(read_end, write_end, out):
    """Starts forwarding `read_end` to `out`; returns a function that waits
    until everything is passed on (the write end closed)."""
    if hasattr(os, "fork"):
        pid = os.fork()
        if pid == 0:  # The filter: it must hold no write end of its own pipe.
            os.close(write_end)
            try:
                _forward(read_end, out)
            finally:
                os._exit(0)
        os.close(read_end)
        return lambda: os.waitpid(pid, 0)
    thread = threading.Thread(
        target=_forward, args=(read_end, out), name="stderr-filter", daemon=True
    )
    thread.start()

    def wait():
        thread.join()
        os.close(read_end)

    return wait


def run(main):
    """`absl.app.run(main)`; an expected failure (bad input, a file that
    cannot be read or written, a diverged run) ends with one line on stderr
    naming the script, and exit code 1."""
    from absl import app

    from keras_dml.training.lock import RunFolderInUse
    from keras_dml.training.loop import TrainingDiverged

    script = os.path.basename(sys.argv[0])
    expected = (app.UsageError, ValueError, OSError, TrainingDiverged, RunFolderInUse)
    # A warning is a note to the user: one line, without Python's source line.
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"

    if any(arg in ("--help", "-h", "-?", "--helpshort") for arg in sys.argv[1:]):
        # What the script accepts, its own flags first (the module docstring
        # holds them), and exit code 0; absl's --help would exit with 1 and
        # list the script's own flags last. --helpfull is absl's, all flags.
        print(sys.modules["__main__"].__doc__)
        sys.exit(0)

    def guarded(argv):
        import tensorflow as tf

        try:
            return main(argv)
        except expected as error:
            sys.exit(f"{script}: {error}")
        except tf.errors.InvalidArgumentError as error:
            # The data pipelines' checks (a corrupt image, named) fail this way.
            found = _ASSERTION.search(str(error.message))
            if found is None:
                raise
            sys.exit(f"{script}: {found.group(1)}")
        except KeyboardInterrupt:
            sys.exit(f"{script}: interrupted.")

    app.run(guarded)
