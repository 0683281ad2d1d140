"""Atomic text files: whole or absent, with the permissions of a plain write."""

import os
import stat

import pytest

from keras_dml.files import atomic_write_text, umask


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_replaces_and_leaves_no_temporary_file(tmp_path, umask_022):
    path = tmp_path / "state.json"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert os.listdir(tmp_path) == ["state.json"]
    # Readable by others, as open(path, "w") under this umask would make it
    # (the temporary file it came from was private).
    assert _mode(path) == 0o644
    assert umask() == 0o022


def test_a_failed_write_keeps_the_old_content(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old")
    with pytest.raises(TypeError):
        atomic_write_text(path, None)  # Fails while writing the temporary file.
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["results.json"]
