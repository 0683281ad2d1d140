"""scripts/train_cifar.py end to end, as users run it: artifacts, exact resume
after SIGKILL, NaN stop, bad flags."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
from data_fixtures import cifar_arrays, write_cifar_archive

from keras_dml.callbacks import EpochCheckpoint, StopOnNaN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "train_cifar.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cifar")
    splits = {"train": cifar_arrays(256, seed=5), "test": cifar_arrays(32, seed=6)}
    return write_cifar_archive(directory, "python", splits)


def _train(*flags, timeout=600):
    return subprocess.run(
        [sys.executable, SCRIPT, "--peers=resnet8,resnet8", "--verbose=0", *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def _weights(path):
    return keras.saving.load_model(path, compile=False).get_weights()


@pytest.mark.slow
def test_smoke_test_writes_every_artifact(tmp_path, archive):
    dml, independent = tmp_path / "dml", tmp_path / "independent"
    result = _train(
        "--smoke_test",
        f"--data_dir={archive}",
        f"--model_dir={dml}",
        "--seed=1",
        "--verbose=2",  # Keras's line and our summary per epoch (0 is silent).
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1/2:" in result.stdout and "epoch 2/2:" in result.stdout
    assert "Final test top-1: peer0" in result.stdout
    for name in (
        "config.json",
        "normalization.json",  # What export_peers.py serves by default.
        "history.csv",
        "cohort.keras",
        "results.json",
        "curves.png",
    ):
        assert (dml / name).is_file(), name
    assert (dml / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(
        f.startswith("events") for _, _, fs in os.walk(dml / "tensorboard") for f in fs
    )
    assert sorted(os.listdir(dml / "export")) == [
        "ensemble",
        "models.config",
        "resnet8",
        "resnet8_1",
    ]
    state = json.loads((dml / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and (dml / "checkpoints" / state["weights"]).is_file()
    csv = (dml / "history.csv").read_text().splitlines()
    assert (
        len(csv) == 3 and csv[0].startswith("epoch,") and "val_peer0_accuracy" in csv[0]
    )
    results = json.loads((dml / "results.json").read_text())
    assert set(results["top1"]) == {"peer0", "peer1", "ensemble"}
    assert all(0.0 <= v <= 1.0 for v in results["top1"].values())
    assert results["run"] == "DML" and results["epochs_completed"] == 2
    assert results["flags"]["peers"] == ["resnet8", "resnet8"]
    assert results["versions"]["tensorflow"] and results["wall_time_seconds"] > 0
    assert len(_weights(str(dml / "cohort.keras"))) > 0

    # The baseline beside it, drawn in the same curves.png.
    result = _train(
        "--smoke_test",
        f"--data_dir={archive}",
        f"--model_dir={independent}",
        "--independent",
        f"--compare_dir={dml}",
        "--noexport",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((independent / "results.json").read_text())
    assert results["run"] == "independent" and not (independent / "export").exists()
    assert results["flags"]["compare_dir"] == str(dml)
    assert (independent / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, archive):
    flags = [
        f"--data_dir={archive}",
        "--epochs=3",
        "--batch_size=8",
        "--lr_milestones=2",
        "--seed=3",
        "--deterministic",
        "--noexport",
    ]
    straight = _train(*flags, f"--model_dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    command = [sys.executable, SCRIPT, "--peers=resnet8,resnet8", "--verbose=0", *flags]
    command.append(f"--model_dir={killed_dir}")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    state = killed_dir / "checkpoints" / "state.json"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and process.poll() is None:
            if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
                break
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    completed = json.loads(state.read_text())["epoch"]
    assert 1 <= completed < 3 and not (killed_dir / "results.json").exists()

    resumed = _train(*flags, f"--model_dir={killed_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming after epoch {completed}" in resumed.stdout
    for a, b in zip(
        _weights(str(tmp_path / "straight" / "cohort.keras")),
        _weights(str(killed_dir / "cohort.keras")),
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    history = json.loads((killed_dir / "results.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]


@pytest.mark.slow
def test_nan_loss_stops_with_a_message_and_a_nonzero_exit(tmp_path, archive):
    result = _train(
        "--smoke_test", f"--data_dir={archive}", f"--model_dir={tmp_path}", "--lr=1e30"
    )
    assert result.returncode == 1
    assert "became NaN or infinite at epoch 1, step" in result.stderr
    assert not (tmp_path / "results.json").exists()


def test_nan_keeps_the_last_good_checkpoint_loadable(tmp_path):
    def model():
        net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        net.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
        return net

    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = np.arange(32) % 3
    stop = StopOnNaN()
    checkpoint = EpochCheckpoint(str(tmp_path / "ckpt"), stop_on_nan=stop)
    net = model()

    class PoisonAtEpoch2(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                kernel = net.layers[0].kernel
                kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    net.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        verbose=0,
        callbacks=[PoisonAtEpoch2(), stop, checkpoint],
    )
    assert (stop.epoch, stop.step) == (2, 1)
    assert "at epoch 2, step" in stop.message()
    fresh = model()
    assert EpochCheckpoint(str(tmp_path / "ckpt")).restore(fresh) == 1
    assert all(np.isfinite(w).all() for w in fresh.get_weights())


_BAD_SETTINGS = [
    (
        {"peers": ("resnet33", "resnet8")},
        "unknown peer 'resnet33'. Valid names: resnet32",
    ),
    ({"peers": ("resnet8",)}, "--peers needs at least 2 names"),
    ({"lr_milestones": (120, 60)}, "--lr_milestones must be increasing"),
    ({"lr": 0.0}, "--lr must be a number > 0"),
    ({"update": "random"}, "--update must be one of simultaneous, sequential"),
]


@pytest.mark.parametrize("given, message", _BAD_SETTINGS)
def test_bad_settings_are_named(tmp_path, given, message):
    # What the script checks (one subprocess below shows how it prints it).
    from keras_dml.training import config as settings

    base = {"dataset": "cifar100", "smoke_test": True, "model_dir": str(tmp_path)}
    with pytest.raises(ValueError) as error:
        settings.resolve({**base, **given})
    assert message in str(error.value)


def test_a_flag_that_does_not_parse_is_named():
    # In this process: the script's parsing, without its start-up (the
    # subprocesses below show how the script prints a failure).
    from absl import flags as absl_flags

    from keras_dml.training import config as settings

    values = settings.define_flags(absl_flags.FlagValues())
    values(["train_cifar.py", "--lr_milestones=60,x"])
    with pytest.raises(ValueError) as error:
        settings.given_settings(values)
    assert "--lr_milestones must be integers" in str(error.value)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--peers=resnet33,resnet8", "--lr=0"],
            "unknown peer 'resnet33'. Valid names: resnet32",
        ),
        (
            ["--data_dir=/nonexistent/cifar.tar.gz"],
            "--data_dir=/nonexistent/cifar.tar.gz does not",
        ),
    ],
)
def test_bad_flags_fail_clearly(tmp_path, flags, message):
    result = subprocess.run(
        [sys.executable, SCRIPT, "--smoke_test", f"--model_dir={tmp_path}", *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    if "--lr=0" in flags:  # Every bad setting is named at once.
        assert "--lr must be a number > 0. Received: 0.0" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_resuming_with_other_flags_is_refused(tmp_path, archive):
    first = _train(
        "--smoke_test", f"--data_dir={archive}", f"--model_dir={tmp_path}", "--noexport"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    second = _train(
        "--smoke_test",
        f"--data_dir={archive}",
        f"--model_dir={tmp_path}",
        "--kl_weight=2",
    )
    assert second.returncode != 0
    assert (
        "holds a run with other settings (--kl_weight: stored 1.0, given 2.0)"
        in second.stderr
    )


def test_synchronized_batchnorm_reaches_every_peer(tmp_path):
    from keras_dml.training import config as settings
    from keras_dml.training.run import build_cohort

    config = settings.resolve(
        {
            "model_dir": str(tmp_path),
            "peers": ("resnet8", "mobilenet_cifar"),
            "synchronized_batchnorm": True,
        }
    )
    data = types.SimpleNamespace(num_classes=100, image_shape=(32, 32, 3))
    model = build_cohort(config, data, steps_per_epoch=10)
    batchnorms = [
        layer
        for peer in model.peers
        for layer in peer.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert batchnorms and all(bn.synchronized for bn in batchnorms)


def test_a_run_stored_before_a_setting_existed_resumes_with_its_default(tmp_path):
    from keras_dml.training import config as settings
    from keras_dml.training.run import check_resume

    config = settings.resolve({"model_dir": str(tmp_path), "seed": 3})
    stored = config.asdict()
    for name in ("synchronized_batchnorm", "dataset", "optimizer", "lr_schedule"):
        del stored[name]  # As written by keras_dml 0.1.
    (tmp_path / "config.json").write_text(json.dumps(stored))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch-0001.keras").write_bytes(b"")
    assert check_resume(config) == config
    with pytest.raises(ValueError, match="--synchronized_batchnorm: stored False"):
        check_resume(config.replace(synchronized_batchnorm=True))


def test_a_run_that_completed_no_epoch_starts_over_with_new_settings(tmp_path):
    from keras_dml.training import config as settings
    from keras_dml.training.run import check_resume

    config = settings.resolve({"model_dir": str(tmp_path), "seed": 3, "lr": 1e30})
    (tmp_path / "config.json").write_text(json.dumps(config.asdict()))
    corrected = config.replace(lr=0.1)
    assert check_resume(corrected) == corrected
