"""scripts/quickstart.py in a fast mode, and its table arithmetic."""

import json
import os
import re
import subprocess
import sys

import pytest

from keras_dml.training.quickstart import format_table, load_digits_split

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_digits_split_is_stratified_uint8():
    (x_train, y_train), (x_test, y_test) = load_digits_split(100)
    assert x_train.shape == (100, 8, 8, 1) and x_test.shape == (1697, 8, 8, 1)
    assert x_train.dtype == "uint8" and x_train.max() == 255
    assert sorted(set(y_train)) == list(range(10))


def test_table_has_means_stds_and_paired_differences():
    scores = {
        "independent": [{"a": 0.90, "ensemble": 0.92}, {"a": 0.80, "ensemble": 0.84}],
        "DML": [{"a": 0.91, "ensemble": 0.93}, {"a": 0.83, "ensemble": 0.84}],
    }
    table = format_table(scores, ["a", "ensemble"], seeds=2)
    lines = table.splitlines()
    assert lines[0] == "| configuration | a | ensemble |"
    assert lines[2] == "| independent | 85.00 ± 7.07 | 88.00 ± 5.66 |"
    assert lines[3] == "| DML | 87.00 ± 5.66 | 88.50 ± 6.36 |"
    # Paired: +1 and +3 points for "a", +1 and 0 for the ensemble.
    assert lines[4] == "| DML - independent | +2.00 ± 1.41 | +0.50 ± 0.71 |"


@pytest.mark.slow
def test_quickstart_fast_mode(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "scripts", "quickstart.py"),
            f"--output_dir={tmp_path}",
            "--seeds=1",
            "--epochs=3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| DML - independent |" in result.stdout
    table = (tmp_path / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")][2:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "independent",
        "DML",
        "DML - independent",
    ]
    for row in rows[:2]:
        for cell in row.strip("|").split("|")[1:]:
            mean = float(re.match(r"\s*([\d.]+) ± ", cell).group(1))
            assert 0.0 <= mean <= 100.0
    assert (tmp_path / "quickstart.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(tmp_path / "export")) == [
        "cnn_small",
        "cnn_wide",
        "ensemble",
        "models.config",
    ]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["train_images"] == 300 and results["test_images"] == 1497
    assert len(results["scores"]["DML"]) == 1
