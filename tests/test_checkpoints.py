"""Checkpoints that resume at the edges: a truncated or unreadable checkpoint,
an unreadable state.json, temporaries left by a killed run, a full disk."""

import errno
import json
import os

import keras
import numpy as np
import pytest

from keras_dml import files
from keras_dml.callbacks import EpochCheckpoint, checkpoint_problem


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    net.compile(
        keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy"
    )
    net.optimizer.build(net.trainable_variables)  # So its state restores too.
    return net


def _train(directory, epochs, keep=2):
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = np.arange(32) % 3
    net = _model()
    checkpoint = EpochCheckpoint(
        str(directory), csv_path=str(directory.parent / "history.csv"), keep=keep
    )
    weights = []

    class Remember(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            weights.append([w.copy() for w in net.get_weights()])

    net.fit(
        x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[checkpoint, Remember()]
    )
    return weights


def _restore(directory):
    messages = []
    net = _model(seed=99)
    checkpoint = EpochCheckpoint(str(directory), log=messages.append)
    epoch = checkpoint.restore(net)
    return epoch, net, checkpoint, messages


def _truncate(path, keep_fraction=0.5):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep_fraction)])


def test_checkpoints_keep_the_last_two_epochs(tmp_path):
    directory = tmp_path / "checkpoints"
    _train(directory, 3)
    assert sorted(os.listdir(directory)) == [
        "epoch-0002.keras",
        "epoch-0003.keras",
        "state.json",
    ]


def test_a_truncated_checkpoint_resumes_from_the_previous_epoch(tmp_path):
    directory = tmp_path / "checkpoints"
    weights = _train(directory, 3)
    _truncate(directory / "epoch-0003.keras")
    epoch, net, checkpoint, messages = _restore(directory)
    assert epoch == 2
    for a, b in zip(net.get_weights(), weights[1]):
        np.testing.assert_array_equal(a, b)
    assert [row["epoch"] for row in checkpoint.history] == [1, 2]
    (message,) = messages
    assert str(directory / "epoch-0003.keras") in message
    assert "(epoch 3) is truncated or corrupt" in message
    assert "resuming from epoch 2" in message


@pytest.mark.parametrize(
    "content", [b"", b"random bytes" * 100], ids=["empty", "random"]
)
def test_the_only_checkpoint_unreadable_starts_over_and_says_so(tmp_path, content):
    directory = tmp_path / "checkpoints"
    _train(directory, 1)
    (directory / "epoch-0001.keras").write_bytes(content)
    epoch, _, checkpoint, messages = _restore(directory)
    assert epoch == 0 and checkpoint.history == []
    (message,) = messages
    assert (
        "epoch-0001.keras (epoch 1)" in message
        and "starts over from epoch 0" in message
    )


def test_an_unreadable_state_file_falls_back_to_the_checkpoints(tmp_path):
    directory = tmp_path / "checkpoints"
    weights = _train(directory, 2)
    _truncate(directory / "state.json", 0.3)
    epoch, net, checkpoint, messages = _restore(directory)
    assert epoch == 2
    for a, b in zip(net.get_weights(), weights[1]):
        np.testing.assert_array_equal(a, b)
    # The history comes back from history.csv.
    assert [row["epoch"] for row in checkpoint.history] == [1, 2]
    assert "unreadable checkpoint state" in messages[0]


def test_a_kill_between_a_checkpoint_and_its_record_redoes_that_epoch(tmp_path):
    # SIGKILL right after epoch-0001.keras appeared, before state.json and
    # history.csv were first written: resuming from it would lose epoch 1's
    # row, so epoch 1 is trained again.
    directory = tmp_path / "checkpoints"
    _train(directory, 1)
    os.remove(directory / "state.json")
    os.remove(tmp_path / "history.csv")
    epoch, _, checkpoint, messages = _restore(directory)
    assert epoch == 0 and checkpoint.history == []
    assert "epoch-0001.keras (epoch 1) has no record in history.csv" in messages[0]
    # With history.csv recording epoch 1 (state.json lost), it resumes.
    _train(tmp_path / "again", 1)
    os.remove(tmp_path / "again" / "state.json")
    epoch, _, checkpoint, _ = _restore(tmp_path / "again")
    assert epoch == 1 and [r["epoch"] for r in checkpoint.history] == [1]


def _replace_member(path, member, content):
    import zipfile

    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members[member] = content
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("damage", ["garbage", "other_architecture"])
def test_a_newest_checkpoint_that_does_not_load_falls_back_to_the_previous(
    tmp_path, damage
):
    # Whole as a zip archive (its CRCs pass), but its weights are garbage or
    # another network's: the previous intact epoch is resumed, and named.
    directory = tmp_path / "checkpoints"
    weights = _train(directory, 3)
    newest = directory / "epoch-0003.keras"
    if damage == "garbage":
        _replace_member(newest, "model.weights.h5", b"not hdf5" * 64)
    else:
        other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)])
        other.save(newest)
    epoch, net, checkpoint, messages = _restore(directory)
    assert epoch == 2
    for a, b in zip(net.get_weights(), weights[1]):
        np.testing.assert_array_equal(a, b)
    assert [row["epoch"] for row in checkpoint.history] == [1, 2]
    (message,) = messages
    assert f"{newest} (epoch 3) does not load into this cohort" in message
    assert "resuming from epoch 2" in message


def test_no_loadable_checkpoint_after_a_failed_load_is_an_error(tmp_path):
    # A failed load may have set some variables: starting over from them
    # would not be a fresh start, so the run is refused, naming the file.
    directory = tmp_path / "checkpoints"
    _train(directory, 1)
    _replace_member(directory / "epoch-0001.keras", "model.weights.h5", b"x" * 64)
    with pytest.raises(ValueError, match="does not load into this cohort") as error:
        _restore(directory)
    assert f"Remove {directory}" in str(error.value)


@pytest.mark.parametrize("history", ['"x"', "[1, 2]", '[{"loss": 1}]'])
def test_a_state_file_with_a_malformed_history_falls_back(tmp_path, history):
    directory = tmp_path / "checkpoints"
    weights = _train(directory, 2)
    state = json.loads((directory / "state.json").read_text())
    text = json.dumps({**state, "history": None}).replace("null", history)
    (directory / "state.json").write_text(text)
    epoch, net, checkpoint, messages = _restore(directory)
    assert epoch == 2
    for a, b in zip(net.get_weights(), weights[1]):
        np.testing.assert_array_equal(a, b)
    assert [row["epoch"] for row in checkpoint.history] == [1, 2]  # history.csv's
    assert "unreadable checkpoint state" in messages[0] and "history" in messages[0]


def test_a_missing_named_checkpoint_is_named(tmp_path):
    directory = tmp_path / "checkpoints"
    _train(directory, 2)
    os.remove(directory / "epoch-0002.keras")
    epoch, _, _, messages = _restore(directory)
    assert epoch == 1
    assert "epoch-0002.keras (epoch 2) is missing" in messages[0]


def test_checkpoints_of_keras_dml_0_1_still_resume(tmp_path):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    net = _model(seed=3)
    net.train_on_batch(np.zeros((2, 4), "float32"), np.zeros(2))
    net.save_weights(str(directory / "epoch-0004.weights.h5"))
    state = {"epoch": 4, "weights": "epoch-0004.weights.h5", "history": []}
    (directory / "state.json").write_text(json.dumps(state))
    epoch, restored, _, messages = _restore(directory)
    assert epoch == 4 and not messages
    for a, b in zip(restored.get_weights(), net.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert checkpoint_problem(str(directory / "epoch-0004.weights.h5")) is None
    _truncate(directory / "epoch-0004.weights.h5")
    assert "truncated" in checkpoint_problem(str(directory / "epoch-0004.weights.h5"))


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    stale = [
        ".state.json-x1y2",  # keras_dml 0.1 names
        "checkpoints/.epoch-0003.weights.h5.tmp.weights.h5",
        ".tmp-cohort.keras",
        ".tmp-config.json-abcd",
        "checkpoints/.tmp-epoch-0004.keras",
        "export/resnet32/.tmp-1-k2j3/saved_model.pb",
        "export/resnet32/.old-zz9/version/saved_model.pb",
    ]
    kept = [
        "config.json",
        ".gitignore",
        "checkpoints/epoch-0002.keras",
        "export/resnet32/1/x",
    ]
    for name in stale + kept:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    removed = files.remove_stale_temporaries(str(run))
    assert len(removed) == len(stale)
    for name in kept:
        assert (run / name).exists(), name
    for name in stale:
        assert not (run / name).exists(), name


def test_a_failed_checkpoint_write_names_the_folder_and_the_intact_epoch(
    tmp_path, monkeypatch
):
    directory = tmp_path / "checkpoints"
    _train(directory, 1)
    net = _model()
    checkpoint = EpochCheckpoint(str(directory))
    assert checkpoint.restore(net) == 1

    def full_disk(model, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(keras.Model, "save", full_disk)
    with pytest.raises(files.OutputError) as error:
        net.fit(
            np.zeros((8, 4), "float32"),
            np.zeros(8),
            epochs=2,
            initial_epoch=1,
            verbose=0,
            callbacks=[checkpoint],
        )
    message = str(error.value)
    assert message.startswith(f"Could not write {directory}: No space left on device.")
    assert f"last completed epoch (1) is intact in {directory}" in message
    # No temporary file left; the intact checkpoint still restores.
    assert sorted(os.listdir(directory)) == ["epoch-0001.keras", "state.json"]
    monkeypatch.undo()
    assert _restore(directory)[0] == 1


def test_nonfinite_weights_with_a_finite_loss_stop_and_are_never_saved(tmp_path):
    # What --lr=1e30 does on TensorFlow and JAX: ReLU turns NaN into 0, the
    # loss stays finite (~1e31) and only the weights show the divergence.
    from keras_dml.callbacks import StopOnNaN

    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = np.arange(32) % 3
    net = _model()
    stop = StopOnNaN()
    directory = tmp_path / "checkpoints"
    checkpoint = EpochCheckpoint(str(directory), stop_on_nan=stop)

    class Poison(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                kernel = net.layers[0].kernel
                kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    net.fit(
        x,
        y,
        batch_size=8,
        epochs=4,
        verbose=0,
        callbacks=[Poison(), stop, checkpoint],
    )
    assert stop.stopped and (stop.epoch, stop.step) == (2, 4)
    assert "weights became NaN or infinite during epoch 2" in stop.message()
    assert "found after its step 4; first: sequential" in stop.message()
    assert sorted(os.listdir(directory)) == ["epoch-0001.keras", "state.json"]


def test_a_checkpoint_holding_nonfinite_weights_is_not_resumed(tmp_path):
    directory = tmp_path / "checkpoints"
    weights = _train(directory, 2)
    poisoned = _model()
    poisoned.layers[0].kernel.assign(np.full((4, 3), np.inf, "float32"))
    poisoned.save(directory / "epoch-0002.keras")
    epoch, net, _, messages = _restore(directory)
    assert epoch == 1
    for a, b in zip(net.get_weights(), weights[0]):
        np.testing.assert_array_equal(a, b)
    assert "(epoch 2) holds NaN or inf in sequential" in messages[0]


def test_truncated_state_and_history_keep_the_intact_rows_and_say_so(tmp_path):
    # Both files cut mid-write (a full disk, a crash of the file system): the
    # intact rows of history.csv are kept, the epoch whose row is damaged is
    # trained again, and the warning says what was recovered.
    directory = tmp_path / "checkpoints"
    _train(directory, 3, keep=3)
    _truncate(directory / "state.json", 0.3)
    csv_path = tmp_path / "history.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:3] + [lines[3][:5]]))  # Row 3 cut.
    epoch, _, checkpoint, messages = _restore(directory)
    assert epoch == 2 and [r["epoch"] for r in checkpoint.history] == [1, 2]
    assert any(
        "history.csv is damaged after epoch 2" in m and "epochs 1-2 are kept" in m
        for m in messages
    ), messages
    assert any("epoch-0003.keras (epoch 3) has no record" in m for m in messages)


def test_a_decompression_bomb_is_refused_before_any_member_is_read(tmp_path):
    import time
    import zipfile

    from keras_dml.saving import keras_file_problem

    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"\0" * (64 << 20))
    assert bomb.stat().st_size < 1 << 20
    started = time.perf_counter()
    for problem in (keras_file_problem(str(bomb)), checkpoint_problem(str(bomb))):
        assert "model.weights.h5 declares 67,108,864 bytes packed into" in problem
        assert "decompression bomb" in problem
    assert time.perf_counter() - started < 1
    # A real checkpoint passes.
    directory = tmp_path / "checkpoints"
    _train(directory, 1)
    assert checkpoint_problem(str(directory / "epoch-0001.keras")) is None
