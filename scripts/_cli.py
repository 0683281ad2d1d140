"""What every script does around its `main`: a quiet TensorFlow start-up,
and expected failures as one line on stderr with exit code 1.

Import this first in a script, before anything that imports TensorFlow: the
start-up lines TensorFlow prints while it loads (oneDNN notice, "Could not
find cuda drivers", "failed call to cuInit" on machines without a GPU) come
from its C++ core before Python can configure logging, so they are captured
from the file descriptor and dropped. `--verbosity=N` (absl's flag) keeps
them all.
"""

import os
import re
import sys
import tempfile
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
)


_ASSERTION = re.compile(r"assertion failed: \[(.*?)\]\s*$", re.MULTILINE)


def _verbosity_requested(argv):
    return any(a.split("=")[0] in ("--verbosity", "-v", "--v") for a in argv[1:])


def quiet_tensorflow(argv=None):
    """Imports TensorFlow with its start-up noise filtered out of stderr.

    Anything else it prints then (a real error) is passed on. Later C++ log
    lines below ERROR are hidden by TF_CPP_MIN_LOG_LEVEL=2 unless the
    environment sets another level or `--verbosity` is given.
    """
    argv = sys.argv if argv is None else argv
    if "tensorflow" in sys.modules:
        return  # Already loaded (a thin alias imported the script it runs).
    if _verbosity_requested(argv):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # Device set-up prints too.
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            sys.stderr.write(
                "".join(
                    line
                    for line in text.splitlines(keepends=True)
                    if not _NOISE.search(line)
                )
            )
            sys.stderr.flush()


def run(main):
    """`absl.app.run(main)`; an expected failure (bad input, a file that
    cannot be read or written, a diverged run) ends with one line on stderr
    naming the script, and exit code 1."""
    from absl import app

    from keras_dml.training.loop import TrainingDiverged

    script = os.path.basename(sys.argv[0])
    expected = (app.UsageError, ValueError, OSError, TrainingDiverged)
    # A warning is a note to the user: one line, without Python's source line.
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"

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
