"""Start-up in either import order, with whatever PyTorch a fresh install gets,
and a script start-up that dies is never silent."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _python(code, backend, timeout=300):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_keras_dml_then_keras_starts_on_torch():
    # With triton 3.8 (PyTorch 2.14.1's) this died with SIGSEGV (rc -11).
    result = _python("import keras_dml, keras; print(keras.backend.backend())", "torch")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "torch"


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_tensorflow_process_can_still_load_torch_compiler():
    # A TensorFlow-backend process that later uses PyTorch's compiler (the
    # benchmarks compare both in one process) loads triton after TensorFlow.
    result = _python(
        "import keras_dml, tensorflow, torch._dynamo; print('ok')", "tensorflow"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_a_crash_during_start_up_shows_what_was_printed():
    # The scripts filter TensorFlow's start-up lines from file descriptor 2;
    # a process that dies meanwhile must still show the rest, and why it died.
    code = f"""
        import ctypes, os, sys
        sys.path.insert(0, {os.path.join(REPO, "scripts")!r})
        import _cli

        def load():
            os.write(2, b"oneDNN custom operations are on: noise\\n")
            os.write(2, b"the real reason it failed\\n")
            ctypes.string_at(0)  # A segmentation fault, as in a native library.

        _cli.filtered_stderr(load)
        """
    result = _python(code, "tensorflow", timeout=120)
    assert result.returncode != 0
    assert "the real reason it failed" in result.stderr
    assert "Segmentation fault" in result.stderr
    assert "oneDNN" not in result.stderr


def test_start_up_output_passes_through_and_errors_keep_their_text():
    code = f"""
        import os, sys
        sys.path.insert(0, {os.path.join(REPO, "scripts")!r})
        import _cli

        def load():
            os.write(2, b"Could not find cuda drivers on your machine\\n")
            print("a warning from Python", file=sys.stderr)
            raise ImportError("no module named nothing")

        try:
            _cli.filtered_stderr(load)
        except ImportError as error:
            print("caught", error)
        print("stderr is back", file=sys.stderr)
        """
    result = _python(code, "tensorflow", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "caught no module named nothing"
    assert result.stderr.splitlines() == ["a warning from Python", "stderr is back"]
