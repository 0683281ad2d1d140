"""scripts/reproduce_paper.py: every part of the paper's experiments on tiny
data, and the analysis tables."""

import json
import os
import subprocess
import sys

import pytest

from keras_dml.training import paper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(*flags):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "reproduce_paper.py"), *flags],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@pytest.mark.slow
def test_every_part_runs_and_writes_its_table_and_figure(tmp_path):
    result = _script(
        f"--output_dir={tmp_path}",
        "--smoke_test",
        "--seeds=1",
        "--small=cnn_small",
        "--large=cnn_wide",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    for heading in ("## a.", "## b.", "## c.", "## d.", "### small+large"):
        assert heading in report, heading
    assert "This command took" in report
    b_rows = [
        line.split("|")[1].strip()
        for line in (tmp_path / "b" / "table.md").read_text().splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    assert b_rows == [
        "variant",
        "independent",
        "distillation",
        "DML",
        "distillation - independent",
        "DML - independent",
    ]
    stored = json.loads(
        (tmp_path / "b" / "seed0" / "distillation" / "config.json").read_text()
    )
    assert stored["peers"] == ["cnn_small"] and stored["teacher"].endswith(
        os.path.join("large+large", "seed0", "independent", "cohort.keras")
    )
    c_rows = (tmp_path / "c" / "table.md").read_text()
    assert "| K=4 |" in c_rows and "| K=4 - K=1 |" in c_rows
    for figure in (
        "c/cohort_sizes.png",
        "d/analysis.png",
        "a/small+small/comparison.png",
    ):
        assert (tmp_path / figure).read_bytes()[:4] == b"\x89PNG", figure
    analysis = json.loads((tmp_path / "d" / "results.json").read_text())
    assert len(analysis["measured"]["DML"]["noise"][0]) == len(paper.SIGMAS)


def test_unknown_networks_and_parts_are_named(tmp_path):
    result = _script(f"--output_dir={tmp_path}", "--small=vgg", "--smoke_test")
    assert result.returncode == 1 and "--small: unknown network 'vgg'" in result.stderr
    result = _script(f"--output_dir={tmp_path}", "--peers=resnet8,resnet8")
    assert result.returncode == 1
    assert "--peers: set per run by reproduce_paper.py" in result.stderr


def test_the_analysis_table_pairs_the_seeds():
    measured = {
        "independent": {"entropy": [0.1, 0.3], "noise": [[1.0, 2.0], [1.0, 3.0]]},
        "DML": {"entropy": [0.2, 0.5], "noise": [[1.0, 1.5], [1.0, 2.0]]},
    }
    lines = paper._analysis_table(measured, (0.0, 0.1), seeds=2).splitlines()
    assert lines[0] == "| | entropy (nats) | σ=0 | σ=0.1 |"
    assert (
        lines[4]
        == "| DML - independent | +0.150 ± 0.071 | +0.000 ± 0.000 | -0.750 ± 0.354 |"
    )
