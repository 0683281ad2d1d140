"""What users see from the scripts when something expected goes wrong: one
line on stderr and exit code 1, never a traceback; and a quiet console when
nothing does."""

import os
import re
import subprocess
import sys
import time

import keras
import pytest
from data_fixtures import cifar_arrays, write_cifar_archive, write_market_tree

import keras_dml
from tests.helpers import dense_peer, remount, small_filesystem

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The environment a user has: no TF_CPP_MIN_LOG_LEVEL of the test suite's.
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
NOISE = re.compile(r"absl::InitializeLog|oneDNN custom operations|cuInit|cuda drivers")


def _script(name, *flags, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", name), *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or ENV,
    )


def _one_line_failure(result, *fragments):
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Exception ignored" not in result.stderr
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith("warning: ")
    ]
    assert len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def cohort_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cohort") / "cohort.keras"
    keras_dml.MutualLearningModel([dense_peer(1), dense_peer(3)]).save(path)
    keras.backend.clear_session()
    return str(path)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    splits = {"train": cifar_arrays(64, seed=5), "test": cifar_arrays(16, seed=6)}
    return write_cifar_archive(tmp_path_factory.mktemp("cifar"), "python", splits)


BAD_KERAS_FILES = {
    "empty": b"",
    "random": os.urandom(3000),
    "truncated": None,  # The first half of a real cohort file.
}


def _bad_keras_file(tmp_path, cohort_file, kind):
    content = BAD_KERAS_FILES[kind]
    if content is None:
        data = open(cohort_file, "rb").read()
        content = data[: len(data) // 2]
    bad = tmp_path / "cohort.keras"
    bad.write_bytes(content)
    return bad


@pytest.mark.parametrize("kind", sorted(BAD_KERAS_FILES))
def test_an_unreadable_keras_file_is_named_by_the_loader(tmp_path, cohort_file, kind):
    # What both scripts load with; the test below runs each script once.
    from keras_dml.saving import load_keras_file

    bad = _bad_keras_file(tmp_path, cohort_file, kind)
    with pytest.raises(ValueError) as error:
        load_keras_file(str(bad), "--model")
    line = str(error.value)
    assert line.startswith(f"--model={bad} is not a readable .keras file")
    assert "File not found" not in line and "\n" not in line


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, kind", [("export_peers.py", "truncated"), ("evaluate_reid.py", "random")]
)
def test_an_unreadable_keras_file_is_named(tmp_path, cohort_file, kind, script):
    bad = _bad_keras_file(tmp_path, cohort_file, kind)
    flags = [f"--model={bad}"]
    flags += (
        [f"--export_dir={tmp_path / 'out'}"]
        if script == "export_peers.py"
        else [f"--data_dir={tmp_path}", f"--output_dir={tmp_path / 'out'}"]
    )
    line = _one_line_failure(_script(script, *flags), f"--model={bad}")
    assert "is not a readable .keras file" in line and "File not found" not in line


@pytest.mark.slow
def test_output_folders_that_are_files_or_read_only(tmp_path, cohort_file, archive):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _one_line_failure(
        _script("export_peers.py", f"--model={cohort_file}", f"--export_dir={a_file}"),
        f"--export_dir={a_file} is a file; expected a folder.",
    )
    _one_line_failure(
        _script(
            "evaluate_reid.py",
            f"--model={cohort_file}",
            f"--data_dir={tmp_path}",
            f"--output_dir={a_file}",
        ),
        f"--output_dir={a_file} is a file",
    )
    _one_line_failure(
        _script("train_cifar.py", "--smoke_test", f"--model_dir={a_file}"),
        f"--model_dir={a_file} is a file",
    )
    read_only = tmp_path / "read_only"
    with small_filesystem(read_only, "1m", read_only=True) as mounted:
        if not mounted:
            pytest.skip("cannot mount a read-only filesystem here")
        _one_line_failure(
            _script(
                "train_cifar.py", "--smoke_test", f"--model_dir={read_only / 'run'}"
            ),
            f"--model_dir={read_only / 'run'} cannot be written: Read-only file system",
        )
        _one_line_failure(
            _script(
                "export_peers.py", f"--model={cohort_file}", f"--export_dir={read_only}"
            ),
            f"--export_dir={read_only} cannot be written",
        )


@pytest.mark.slow
def test_an_empty_query_split_stops_a_market_run_before_training(tmp_path):
    root = write_market_tree(tmp_path)
    for name in os.listdir(os.path.join(root, "query")):
        os.remove(os.path.join(root, "query", name))
    _one_line_failure(
        _script(
            "train_market1501.py",
            f"--data_dir={root}",
            f"--model_dir={tmp_path / 'run'}",
            "--weights=none",
        ),
        f"no query images in {os.path.join(root, 'query')}",
    )


@pytest.mark.slow
def test_cifar_without_data_dir_offline_fails_within_seconds(tmp_path):
    env = {
        **ENV,
        # A proxy on a closed local port: refused at once, whatever the network.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "TFDS_DATA_DIR": str(tmp_path / "tfds"),
    }
    started = time.perf_counter()
    result = _script("train_cifar.py", f"--model_dir={tmp_path / 'run'}", env=env)
    elapsed = time.perf_counter() - started
    _one_line_failure(result, "cannot be downloaded", "cifar-100-python.tar.gz")
    assert elapsed < 60  # Interpreter and TensorFlow start-up included.


@pytest.mark.slow
def test_a_full_disk_ends_the_run_cleanly_and_the_next_run_resumes(tmp_path, archive):
    disk = tmp_path / "disk"
    with small_filesystem(disk, "3m") as mounted:
        if not mounted:
            pytest.skip("cannot mount a small filesystem here (see test_checkpoints)")
        run = disk / "run"
        flags = [
            "--smoke_test",
            f"--data_dir={archive}",
            f"--model_dir={run}",
            "--seed=0",
            "--verbose=0",
        ]
        # Two resnet8-pair checkpoints (1.4 MB each) fit in 3 MB; the third
        # epoch's does not, with the two before it kept.
        first = _script(
            "train_cifar.py", "--peers=resnet8,resnet8", "--epochs=4", *flags
        )
        line = _one_line_failure(
            first,
            f"Could not write {run / 'checkpoints'}: No space left on device.",
            "The checkpoint of the last completed epoch (",
            f") is intact in {run / 'checkpoints'}",
        )
        assert first.returncode == 1 and "Segmentation" not in first.stderr
        epoch = int(re.search(r"last completed epoch \((\d+)\)", line).group(1))
        leftovers = [n for n in _all_files(run) if n.startswith((".tmp-", ".old-"))]
        assert leftovers == []
        # A killed run's temporaries, removed by the next run.
        (run / ".tmp-cohort.keras").write_bytes(b"partial")
        (run / "checkpoints" / ".state.json-k3j2").write_text("{")
        remount(disk, "64m")
        second = _script(
            "train_cifar.py", "--peers=resnet8,resnet8", "--epochs=4", *flags[:-1]
        )
        assert second.returncode == 0, second.stderr[-3000:]
        assert f"Resuming after epoch {epoch}" in second.stdout
        assert "Removed" in second.stdout and ".tmp-cohort.keras" in second.stdout
        assert not (run / ".tmp-cohort.keras").exists()
        assert not (run / "checkpoints" / ".state.json-k3j2").exists()
        # A quiet console, lines that fit a terminal.
        assert not NOISE.search(second.stderr), second.stderr[:2000]
        # One line per epoch (not a terminal: no bar, no carriage return).
        progress = [line for line in second.stdout.splitlines() if "epoch" in line]
        epochs = [line for line in progress if line.startswith("epoch ")]
        assert len(epochs) == 4 - epoch and max(map(len, epochs)) < 100, progress
        assert "━" not in second.stdout and "\r" not in second.stdout


def _all_files(folder):
    return [name for _, dirs, files in os.walk(folder) for name in dirs + files]


@pytest.mark.slow
def test_verbosity_brings_tensorflows_start_up_lines_back(tmp_path):
    quiet = _script("export_peers.py", f"--model={tmp_path}/x.keras", "--export_dir=x")
    loud = _script(
        "export_peers.py",
        f"--model={tmp_path}/x.keras",
        "--export_dir=x",
        "--verbosity=0",
    )
    _one_line_failure(quiet, "does not exist")
    assert not NOISE.search(quiet.stderr)
    assert len(loud.stderr.splitlines()) > len(quiet.stderr.splitlines())


@pytest.mark.parametrize(
    "script, own, refused",
    [
        ("compare_mimicry.py", ["output_dir", "seeds"], ["model_dir", "mimicry"]),
        ("reproduce_paper.py", ["small", "large", "parts"], ["peers", "teacher"]),
    ],
)
def test_help_lists_what_the_script_accepts_own_flags_first_and_exits_0(
    script, own, refused
):
    result = _script(script, "--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    settings_at = text.index("Settings (a dataset changes only their defaults):")
    for name in own:
        assert -1 < text.index(f"  --{name}\n") < settings_at, name
    for name in refused:
        assert f"  --{name}\n" not in text, name
    assert "  --epochs\n" in text and "  --kl_weight\n" in text
