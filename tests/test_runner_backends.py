"""`scripts/train.py` on JAX and PyTorch (KERAS_BACKEND): a run trains,
resumes exactly, stops on NaN, reports and exports for TF Serving as on
TensorFlow; on JAX, two host devices and two processes train to one device's
weights."""

import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
from test_multi_worker import _free_ports

import keras_dml  # noqa: F401  (registers the saved classes)
from keras_dml import backends
from keras_dml.backends.jax import JaxDevices
from keras_dml.training import config as settings
from keras_dml.training.run import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "train.py")
TIMEOUT = 600


def _env(backend, **extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KERAS_DISTRIBUTION_", "TF_CONFIG", "XLA_FLAGS"))
    }
    return {**env, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _train(backend, *flags, **env):
    return subprocess.Popen(
        [sys.executable, SCRIPT, "--seed=0", "--verbose=0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(backend, **env),
    )


def _finished(*processes):
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            outputs.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


def _succeeded(*processes):
    outputs = _finished(*processes)
    for code, _, stderr in outputs:
        assert code == 0, stderr[-3000:]
    return [stdout for _, stdout, _ in outputs]


def _weights(run_dir):
    model = keras.saving.load_model(run_dir / "cohort.keras", compile=False)
    weights = model.get_weights()
    keras.backend.clear_session()
    return weights


def _assert_same_weights(a, b, atol=1e-4):
    for x, y in zip(_weights(a), _weights(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=atol)


def _resume_and_report(backend, flags, tmp_path, *others):
    """Runs `flags` straight (exported) and as one epoch then a resumed run,
    beside the started processes `others`; checks that the resumed run
    ends with the straight run's weights, exactly, and what the straight run
    reports. Returns the straight run's folder."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    first = _train(
        backend, *flags, "--epochs=1", "--noexport", f"--model_dir={resumed}"
    )
    whole = _train(backend, *flags, "--epochs=2", f"--model_dir={straight}")
    _succeeded(first, whole, *others)
    (stdout,) = _succeeded(
        _train(backend, *flags, "--epochs=2", "--noexport", f"--model_dir={resumed}")
    )
    assert "Resuming after epoch 1" in stdout
    _assert_same_weights(straight, resumed, atol=0)  # Exactly.

    results = json.loads((straight / "results.json").read_text())
    assert results["backend"] == backend
    assert results["versions"][backend] and results["strategy"].startswith("one device")
    assert [row["epoch"] for row in results["history"]] == [1, 2]
    assert (straight / "curves.png").is_file()
    # Exported by a TensorFlow process from the run's cohort.
    for name in ("cnn_small", "cnn_wide", "ensemble"):
        assert (straight / "export" / name / "1" / "saved_model.pb").is_file()
    assert not (resumed / "export").exists()
    return straight


@pytest.mark.slow
def test_a_torch_run_resumes_exactly_reports_and_exports(tmp_path):
    _resume_and_report(
        "torch", ["--dataset=digits", "--smoke_test", "--deterministic"], tmp_path
    )


@pytest.mark.slow
@pytest.mark.xdist_group("ports")
def test_jax_runs_resume_exactly_and_train_as_one_device_on_several(tmp_path):
    """A one-device run resumes exactly, reports and exports; 2 host devices
    (`--strategy=mirrored`) and 2 processes of one device
    (`keras.distribution.initialize`) train to its weights on the global
    batches one device sees. The peers have BatchNorm (its statistics are
    the global batch's), and the test set (1,781 digits) ends in a batch of
    5 that no device split could divide: it is evaluated whole."""
    flags = [
        "--dataset=digits",
        "--train_size=16",
        "--validation_size=0",
        "--batch_size=8",
    ]
    mirrored, processes = tmp_path / "mirrored", tmp_path / "processes"
    several = [*flags, "--epochs=2", "--noexport"]
    coordinator = f"127.0.0.1:{_free_ports(1)[0]}"
    temporary = tmp_path / "tmp"  # Where process 1 keeps its copy of the run.
    temporary.mkdir()
    started = [
        _train(
            "jax",
            *several,
            "--strategy=mirrored",
            f"--model_dir={mirrored}",
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
        ),
    ] + [
        _train(
            "jax",
            *several,
            f"--model_dir={processes}",  # auto: multi_worker from the variables.
            KERAS_DISTRIBUTION_JOB_ADDRESSES=coordinator,
            KERAS_DISTRIBUTION_NUM_PROCESSES="2",
            KERAS_DISTRIBUTION_PROCESS_ID=str(index),
            TMPDIR=str(temporary),
        )
        for index in range(2)
    ]
    one = _resume_and_report("jax", flags, tmp_path, *started)
    assert not [p for p in temporary.iterdir() if p.name.startswith("keras_dml_")]
    want = json.loads((one / "results.json").read_text())
    for run_dir in (mirrored, processes):
        got = json.loads((run_dir / "results.json").read_text())
        assert (got["strategy"], got["replicas"]) == ("DataParallel", 2)
        for key in ("loss", "val_loss", "val_peer0_accuracy", "val_ensemble_accuracy"):
            np.testing.assert_allclose(
                [row[key] for row in got["history"]],
                [row[key] for row in want["history"]],
                rtol=1e-5,
                err_msg=f"{run_dir.name}: {key}",
            )
        # Other summation orders: weights of ~0.1 differ by up to ~1e-5.
        _assert_same_weights(one, run_dir)


@pytest.mark.slow
def test_a_nan_loss_stops_with_a_message_on_jax(tmp_path):
    """On JAX, where --lr=1e30 leaves the loss large but finite (it is inf on
    TensorFlow); the check is the same callback on every backend."""
    ((code, _, stderr),) = _finished(
        _train(
            "jax",
            "--dataset=digits",
            "--smoke_test",
            "--lr=1e38",
            f"--model_dir={tmp_path}",
        )
    )
    assert code == 1
    assert "became NaN or infinite at epoch 1, step" in stderr
    assert not (tmp_path / "results.json").exists()


def test_devices_refused_by_the_backend_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    for name in ("mirrored", "multi_worker"):
        with pytest.raises(
            ValueError, match=f"--strategy={name} needs several devices"
        ):
            backends.make_devices(name)
    config = settings.resolve(
        {"dataset": "digits", "model_dir": str(tmp_path / "r"), "cpu_threads": 1}
    )
    with pytest.raises(ValueError, match="--cpu_threads sets TensorFlow's threads"):
        run(config)
    assert not (tmp_path / "r").exists()


def test_jax_multi_worker_names_the_variables_it_needs(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.delenv("KERAS_DISTRIBUTION_NUM_PROCESSES", raising=False)
    with pytest.raises(ValueError, match="KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        backends.make_devices("multi_worker")


def test_jax_devices_check_the_batch_and_the_process_count(monkeypatch):
    """Neither check starts JAX's runtime in this TensorFlow process."""
    two_devices = types.SimpleNamespace(
        device_mesh=types.SimpleNamespace(devices=np.empty((2,), object))
    )
    jax_devices = JaxDevices(two_devices)
    jax_devices.check_batch_size(8)
    with pytest.raises(ValueError, match="--batch_size=7 does not split over 2 JAX"):
        jax_devices.check_batch_size(7)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="Received: 'two'"):
        backends.make_devices("auto")
