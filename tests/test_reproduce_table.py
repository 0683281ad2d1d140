"""scripts/reproduce_table.py on tiny data, and the table it writes."""

import os
import subprocess
import sys

import pytest
from data_fixtures import cifar_arrays, write_cifar_archive

from keras_dml.training.reproduce import PAPER_CIFAR100, format_table, parse_pairs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _results(peer0, peer1, ensemble):
    return {"top1": {"peer0": peer0, "peer1": peer1, "ensemble": ensemble}}


def test_table_puts_the_papers_numbers_beside_ours():
    rows = [
        (
            ("resnet32", "resnet32"),
            {
                "independent": _results(0.69, 0.68, 0.72),
                "DML": _results(0.7123, 0.705, 0.73),
            },
        ),
        (
            ("resnet8", "resnet8"),
            {"independent": _results(0.5, 0.5, 0.5), "DML": _results(0.6, 0.6, 0.6)},
        ),
    ]
    table = format_table(rows, epochs=200).splitlines()
    assert table[2] == (
        "| resnet32 + resnet32 | 69.00 (68.99) | 71.23 (71.19) | 68.00 (68.99) | "
        "70.50 (70.75) | 72.00 | 73.00 |"
    )
    assert (
        table[3]
        == "| resnet8 + resnet8 | 50.00 | 60.00 | 50.00 | 60.00 | 50.00 | 60.00 |"
    )
    assert "after 200 epochs" in table[-1]


def test_pairs_are_parsed_and_checked():
    assert parse_pairs(["resnet32+mobilenet_cifar"]) == [
        ("resnet32", "mobilenet_cifar")
    ]
    with pytest.raises(ValueError, match="not two peers joined by"):
        parse_pairs(["resnet32"])
    assert len(PAPER_CIFAR100) == 6


@pytest.mark.slow
def test_smoke_run_writes_the_table(tmp_path):
    splits = {"train": cifar_arrays(32, seed=1), "test": cifar_arrays(16, seed=2)}
    archive = write_cifar_archive(tmp_path, "binary", splits)
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "scripts", "reproduce_table.py"),
            "--smoke_test",
            "--pairs=resnet8+resnet8",
            f"--data_dir={archive}",
            f"--model_dir={tmp_path / 'table'}",
            "--verbose=0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "table" / "table.md").read_text()
    assert "| resnet8 + resnet8 |" in table
    for run in ("independent", "dml"):
        assert (tmp_path / "table" / "resnet8+resnet8" / run / "results.json").is_file()
    assert (tmp_path / "table" / "resnet8+resnet8" / "dml" / "curves.png").is_file()
