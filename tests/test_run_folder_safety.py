"""A run folder that others can write to: planted symbolic links are refused
or never written through, temporary names cannot be guessed, and a damaged
config.json is named (issue 28, items 6 and 9)."""

import json
import os

import keras
import pytest

from keras_dml import files
from keras_dml.training import config as settings
from keras_dml.training.lock import RunLock
from keras_dml.training.run import run


def _victim(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file\n")
    return victim


def test_a_lock_file_that_is_a_link_is_refused_and_not_written(tmp_path):
    victim = _victim(tmp_path)
    folder = tmp_path / "run"
    folder.mkdir()
    os.symlink(victim, folder / ".lock")
    with pytest.raises(ValueError, match=r"\.lock is a symbolic link"):
        RunLock(str(folder)).acquire()
    assert victim.read_text() == "the user's own file\n"


def test_a_run_folder_holding_a_link_is_refused_before_anything_is_written(tmp_path):
    victim = _victim(tmp_path)
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    os.symlink(victim, folder / "checkpoints" / "state.json")
    config = settings.resolve(
        {"dataset": "digits", "model_dir": str(folder), "smoke_test": True}
    )
    with pytest.raises(ValueError, match=r"state\.json is a symbolic link \(to "):
        run(config)
    assert victim.read_text() == "the user's own file\n"
    assert not (folder / "config.json").exists()
    # The folder itself may be a link: the user chose it.
    os.remove(folder / "checkpoints" / "state.json")
    linked = tmp_path / "linked"
    os.symlink(folder, linked)
    files.refuse_links(str(linked))


def test_temporary_names_cannot_be_planted(tmp_path):
    victim = _victim(tmp_path)
    target = tmp_path / "cohort.keras"
    # keras_dml <= 0.3 wrote through the fixed name ".tmp-cohort.keras".
    os.symlink(victim, tmp_path / ".tmp-cohort.keras")
    first, second = files.temporary_path(target), files.temporary_path(target)
    assert first != second and ".tmp-cohort.keras" not in (first, second)
    for name in (first, second):
        assert os.path.basename(name).startswith(".tmp-")
        assert name.endswith("-cohort.keras") and not os.path.islink(name)
        os.remove(name)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    files.save_model(model, target)
    assert target.is_file() and not target.is_symlink()
    assert victim.read_text() == "the user's own file\n"
    # Readable as a file written with open() would be (not mkstemp's 0600).
    assert target.stat().st_mode & 0o777 == 0o666 & ~files.umask()
    leftovers = {p.name for p in tmp_path.iterdir()}
    assert leftovers == {"victim.txt", ".tmp-cohort.keras", "cohort.keras"}


@pytest.mark.parametrize("content", ["[]", "null", '"a string"', "3"])
def test_a_config_json_that_is_not_an_object_is_named(tmp_path, content):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(content)
    (folder / "checkpoints" / "state.json").write_text(json.dumps({"epoch": 1}))
    config = settings.resolve(
        {"dataset": "digits", "model_dir": str(folder), "smoke_test": True}
    )
    with pytest.raises(ValueError, match=r"config\.json holds \w+ JSON, not a run's"):
        run(config)
    assert (folder / "config.json").read_text() == content
