"""The same cohort on every supported Keras backend: one process per backend
(tests/backend_step_job.py) trains the same cohorts from the same initial
weights on the same batches, and the weights must agree."""

import os
import subprocess
import sys

import numpy as np
import pytest

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backend_step_job.py")


def _job(backend, out, *flags, **env):
    result = subprocess.run(
        [sys.executable, JOB, str(out), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "KERAS_BACKEND": backend,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **env,
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, dict(np.load(out))


def _assert_same_training(got, want, rtol=1e-5, atol=1e-6):
    after = sorted(k for k in want if "/after/" in k)
    assert after and set(after) <= set(got)
    for key in after:
        np.testing.assert_allclose(
            got[key], want[key], rtol=rtol, atol=atol, err_msg=key
        )
    cases = {key.split("/")[0] for key in after}
    for case in cases:
        np.testing.assert_allclose(got[f"{case}/loss"], want[f"{case}/loss"], rtol=rtol)


@pytest.mark.slow
def test_two_steps_give_the_same_weights_on_every_backend(tmp_path):
    """Both update orders, with and without unlabeled examples, KDCL and
    temporal mean teachers; BatchNorm, per-peer optimizers (SGD with
    Nesterov, Adam, SGD), auxiliary logits, an L2 regularizer, temperature
    and label smoothing; TensorFlow, JAX and PyTorch. Also: a .keras file
    crosses from TensorFlow to the others, and JAX's DataParallel over two
    host devices matches one device. (A run trained on JAX and exported for
    TF Serving: tests/test_runner_backends.py.)"""
    cohort_file = str(tmp_path / "cohort.keras")
    stdout, tensorflow = _job("tensorflow", tmp_path / "tf.npz", "--save", cohort_file)
    assert "tensorflow on 1 device" in stdout
    init = str(tmp_path / "tf.npz")
    stdout, jax = _job(
        "jax",
        tmp_path / "jax.npz",
        "--init",
        init,
        "--load",
        cohort_file,
        "--data_parallel",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    assert "jax on 1 device" in stdout and "jax on 2 devices in parallel" in stdout
    stdout, torch = _job(
        "torch", tmp_path / "torch.npz", "--init", init, "--load", cohort_file
    )
    assert "torch on 1 device" in stdout
    for backend in (tensorflow, jax, torch):  # mixed_bfloat16 trains on each.
        losses = backend["bfloat16/losses"]
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    # A .keras file saved on TensorFlow loads on JAX: every weight, the
    # temporal mean's averages and every optimizer's state.
    saved = sorted(k for k in tensorflow if k.startswith("keras_file/"))
    assert len(saved) > 30
    for key in saved:
        np.testing.assert_array_equal(jax[key], tensorflow[key], err_msg=key)
        np.testing.assert_array_equal(torch[key], tensorflow[key], err_msg=key)
    # The steps moved the weights, so agreeing means something.
    for key in (k for k in tensorflow if "/after/" in k):
        initial = tensorflow[key.replace("/after/", "/init/")]
        if "/after/0" in key:
            assert np.max(np.abs(tensorflow[key] - initial)) > 1e-3
    _assert_same_training(jax, tensorflow)
    _assert_same_training(torch, tensorflow)

    # keras.distribution.DataParallel over two host devices: the global
    # batch's step, as on one device.
    parallel = {k[len("parallel/") :]: v for k, v in jax.items() if "parallel/" in k}
    one_device = {k: v for k, v in jax.items() if "parallel/" not in k}
    _assert_same_training(parallel, one_device)


# The core test files (the loss, the mimicry methods, the cohort's steps,
# callbacks and saving, re-ID features) run on every backend; tests that need TensorFlow
# (a tf.GradientTape reference, TF Serving export) are marked
# `tensorflow_only` and skipped there.
CORE_FILES = (
    "tests/test_analysis.py",
    "tests/test_branch_cohort.py",
    "tests/test_kl_ramp.py",
    "tests/test_labels.py",
    "tests/test_losses.py",
    "tests/test_mimicry.py",
    "tests/test_mutual_learning.py",
    "tests/test_reid_features.py",
    "tests/test_teacher.py",
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_core_test_files_pass_on(backend):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            *CORE_FILES,
        ],
        cwd=os.path.dirname(os.path.dirname(JOB)),
        capture_output=True,
        text=True,
        timeout=1200,
        env={
            **os.environ,
            "KERAS_BACKEND": backend,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            # These tests compile many small programs once each: XLA:CPU
            # without its expensive LLVM passes compiles them faster (the
            # JAX run from a cold cache: 134 s -> 110 s); the numbers that
            # must agree across backends are checked above, fully optimised.
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
            + " --xla_backend_optimization_level=0"
            " --xla_llvm_disable_expensive_passes=true",
        },
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout
