"""scripts/train_market1501.py and scripts/evaluate_reid.py end to end on a
tiny fake Market-1501 (3 training ids, 2 cameras)."""

import json
import os
import subprocess
import sys

import pytest
from data_fixtures import write_market_tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
COLUMNS = (
    "| model | rank-1 | rank-5 | rank-10 | rank-20 | mAP | mAP (official) | mINP |"
)


def _script(name, *flags):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", name), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )


@pytest.mark.slow
def test_train_then_evaluate(tmp_path):
    root = write_market_tree(tmp_path)
    run = tmp_path / "run"
    trained = _script(
        "train_market1501.py",
        f"--data_dir={root}",
        f"--model_dir={run}",
        "--weights=none",
        "--image_size=64,32",
        "--peers=mobilenet,mobilenet",  # keras_dml 0.1's names still work.
        "--batch_size=4",
        "--epochs=2",
        "--seed=0",
        "--verbose=0",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert COLUMNS in trained.stdout
    for name in ("reid_mobilenet", "reid_mobilenet_1", "ensemble"):
        assert f"| {name} |" in trained.stdout
    results = json.loads((run / "reid_results.json").read_text())
    assert set(results) == {"reid_mobilenet", "reid_mobilenet_1", "ensemble"}
    for metrics in results.values():
        assert metrics["num_valid_queries"] == 3  # Every fake query has a match.
        assert len(metrics["cmc"]) == 50 and metrics["cmc"][-1] == 1.0
        assert 0 < metrics["mAP_official"] <= metrics["mAP"] <= 1
    assert (run / "cmc.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(run / "export")) == [
        "ensemble",
        "models.config",
        "reid_mobilenet",
        "reid_mobilenet_1",
    ]
    summary = json.loads((run / "results.json").read_text())
    assert summary["epochs_completed"] == 2 and summary["flags"]["lr"] == 2e-4

    evaluated = _script(
        "evaluate_reid.py",
        f"--model={run / 'cohort.keras'}",
        f"--data_dir={root}",
        f"--output_dir={tmp_path / 'eval'}",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert COLUMNS in evaluated.stdout
    again = json.loads((tmp_path / "eval" / "reid_results.json").read_text())
    for name, metrics in results.items():  # The saved cohort ranks as the trained one.
        assert again[name]["mAP"] == pytest.approx(metrics["mAP"], abs=1e-6)
        assert again[name]["cmc"] == pytest.approx(metrics["cmc"], abs=1e-6)
    assert (tmp_path / "eval" / "cmc.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "eval" / "reid_results.md").read_text().startswith(COLUMNS)


def test_bad_settings_are_named_before_anything_loads(tmp_path):
    # In this process (the subprocesses below show how the scripts print it).
    from keras_dml.saving import load_keras_file
    from keras_dml.training import config as settings

    with pytest.raises(ValueError, match="unknown peer 'vgg'"):
        settings.resolve(
            {
                "dataset": "market1501",
                "peers": ("mobilenet", "vgg"),
                "model_dir": str(tmp_path),
            }
        )
    with pytest.raises(FileNotFoundError, match="/nonexistent.keras does not"):
        load_keras_file("/nonexistent.keras", "--model")


@pytest.mark.parametrize(
    "script, flags, message",
    [
        (
            "train_market1501.py",
            ["--data_dir=/nonexistent"],
            "--data_dir=/nonexistent does",
        ),
        (
            "evaluate_reid.py",
            ["--model=/nonexistent.keras"],
            "/nonexistent.keras does not",
        ),
    ],
)
def test_bad_flags(tmp_path, script, flags, message):
    defaults = {
        "train_market1501.py": [
            f"--data_dir={tmp_path}",
            f"--model_dir={tmp_path / 'r'}",
        ],
        "evaluate_reid.py": [
            f"--model={tmp_path / 'm.keras'}",
            f"--data_dir={tmp_path}",
            f"--output_dir={tmp_path / 'e'}",
        ],
    }[script]
    result = _script(script, *defaults, *flags)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
