"""scripts/quickstart.py: the runner over seeds on the digits, and the
paired-comparison table."""

import json
import os
import re
import subprocess
import sys

import pytest

from keras_dml.datasets.digits import load_digits_split
from keras_dml.training import compare, quickstart
from keras_dml.training import config as settings

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
    table = compare.format_table(scores, seeds=2)
    lines = table.splitlines()
    assert lines[0] == "| variant | a | ensemble |"
    assert lines[2] == "| independent | 85.00 ± 7.07 | 88.00 ± 5.66 |"
    assert lines[3] == "| DML | 87.00 ± 5.66 | 88.50 ± 6.36 |"
    # Paired: +1 and +3 points for "a", +1 and 0 for the ensemble.
    assert lines[4] == "| DML - independent | +2.00 ± 1.41 | +0.50 ± 0.71 |"


def test_table_with_step_times_and_several_variants():
    scores = {
        "independent": [{"a": 0.5}],
        "x": [{"a": 0.75}],
        "y": [{"a": 0.25}],
    }
    lines = compare.format_table(
        scores, seeds=1, step_seconds={"independent": 0.1, "x": 0.15, "y": 0.1}
    ).splitlines()
    assert lines[0] == "| variant | a | step time |"
    assert lines[3] == "| x | 75.00 ± 0.00 | 1.50x |"
    assert lines[5] == "| x - independent | +25.00 ± 0.00 |  |"
    assert lines[6] == "| y - independent | -25.00 ± 0.00 |  |"


def test_average_history_is_the_mean_over_seeds():
    histories = [
        [
            {"epoch": 1, "val_peer0_accuracy": 0.5},
            {"epoch": 2, "val_peer0_accuracy": 0.7},
        ],
        [
            {"epoch": 1, "val_peer0_accuracy": 0.3},
            {"epoch": 2, "val_peer0_accuracy": 0.9},
        ],
    ]
    assert compare.average_history(histories) == [
        {"epoch": 1, "val_peer0_accuracy": 0.4},
        {"epoch": 2, "val_peer0_accuracy": 0.8},
    ]


def test_paired_differences_are_per_seed_then_averaged():
    def run(*accuracies):
        return {
            "history": [
                {"epoch": e + 1, "val_peer0_accuracy": a, "val_ensemble_accuracy": a}
                for e, a in enumerate(accuracies)
            ]
        }

    results = {
        "independent": [run(0.5, 0.6), run(0.7, 0.8)],
        "x": [run(0.6, 0.6), run(0.7, 1.0)],
    }
    differences = compare.paired_differences(results, "independent")
    assert list(differences) == ["x"]
    for name in ("peer0", "ensemble"):
        got = differences["x"][name]
        assert [epoch for epoch, _ in got] == [1, 2]
        assert [round(d, 6) for _, d in got] == [0.05, 0.1]


def test_variants_are_checked_before_any_run(tmp_path):
    base = settings.resolve({"dataset": "digits", "model_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="--kl_weight must be a number >= 0"):
        compare.check_variants(base, [("a", {}), ("b", {"kl_weight": -1.0})])
    with pytest.raises(ValueError, match="evaluated by ranking"):
        compare.check_variants(base.replace(dataset="market1501"), [("a", {})])
    assert not os.listdir(tmp_path)


def test_train_size_is_a_digits_setting():
    assert settings.resolve({"dataset": "digits", "model_dir": "x"}).train_size == 300
    # The quickstart's split: 300 to train and 100 held out, from one
    # stratified split of 400; the validation split that chose its settings
    # is not tested on.
    from keras_dml import datasets

    config = settings.resolve(
        {"dataset": "digits", "model_dir": "x", **quickstart.DIGITS_DEFAULTS}
    )

    data = datasets.get("digits").load(config)
    assert data.num_train == 300 and data.validation_name == "validation"
    validation = sum(int(y.shape[0]) for _, y in data.validation)
    test = sum(int(y.shape[0]) for _, y in data.test_batches)
    assert (validation, test) == (100, 1397)
    with pytest.raises(ValueError, match="--validation_size=200"):
        settings.resolve(
            {
                "dataset": "digits",
                "model_dir": "x",
                "train_size": 900,
                "validation_size": 200,
            }
        )
    # The setting's own range, then the digits' (with the held-out split).
    with pytest.raises(ValueError, match="--train_size must be an integer >= 10"):
        settings.resolve({"dataset": "digits", "model_dir": "x", "train_size": 5})
    with pytest.raises(ValueError, match="--train_size must be in 10..1000"):
        settings.resolve({"dataset": "digits", "model_dir": "x", "train_size": 1001})
    with pytest.raises(ValueError, match="--train_size applies to .*digits.* only"):
        settings.resolve({"dataset": "cifar10", "model_dir": "x", "train_size": 50})


def _script(name, *flags):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", name), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def _quickstart(*flags):
    return _script("quickstart.py", *flags)


@pytest.mark.slow
def test_quickstart_fast_mode_and_resume(tmp_path):
    flags = [f"--output_dir={tmp_path}", "--seeds=2", "--epochs=2", "--train_size=100"]
    result = _quickstart(*flags)
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
    assert (tmp_path / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    # Each run is an ordinary run folder; only seed 0's DML run exports.
    # The quickstart's peers: two cnn_wide (chosen on validation), told
    # apart by position.
    assert sorted(os.listdir(tmp_path / "seed0" / "dml" / "export")) == [
        "ensemble",
        "models.config",
        "peer0_cnn_wide",
        "peer1_cnn_wide",
    ]
    for run in ("seed0/independent", "seed1/dml", "seed1/independent"):
        assert not (tmp_path / run / "export").exists()
        stored = json.loads((tmp_path / run / "config.json").read_text())
        assert stored["dataset"] == "digits" and stored["train_size"] == 100
        assert stored["validation_size"] == 100 and stored["lr"] == 3e-3
    # Same seed, same initial weights and batches: the runs differ by kl_weight only.
    independent = json.loads((tmp_path / "seed1/independent/config.json").read_text())
    assert independent["seed"] == 1 and independent["independent"] is True
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["scores"]["DML"]) == 2
    assert results["config"]["train_size"] == 100

    # Re-running the same command resumes: every run is complete, none retrains.
    again = _quickstart(*flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "table.md").read_text() == table


def test_quickstart_refuses_per_run_settings(tmp_path):
    result = _quickstart(f"--output_dir={tmp_path}", "--seed=3")
    assert result.returncode == 1
    assert "--seed: set per run by quickstart.py" in result.stderr
    assert not os.listdir(tmp_path)


def _compare_mimicry(*flags):
    return _script("compare_mimicry.py", *flags)


@pytest.mark.slow
def test_compare_mimicry_runs_every_method_with_step_times(tmp_path):
    result = _compare_mimicry(f"--output_dir={tmp_path}", "--seeds=1", "--smoke_test")
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0] == "| variant | cnn_small | cnn_wide | ensemble | step time |"
    methods = [
        "DML",
        "KDCL-MinLogit",
        "KDCL-Naive",
        "KDCL-Linear",
        "KDCL-General",
        "temporal mean",
        "codistillation",
    ]
    assert [r.split("|")[1].strip() for r in lines[2:]] == [
        "independent",
        *methods,
        *[f"{m} - independent" for m in methods],
    ]
    assert re.search(r"\| \d+\.\d\dx \|$", lines[3])  # DML's relative step time.
    stored = json.loads((tmp_path / "seed0/temporal_mean/config.json").read_text())
    assert stored["mimicry"] == "temporal_mean" and stored["teacher_decay"] == 0.9
    # Every variant holds the same 100 images out: KDCL-General fits on them.
    for variant in ("independent", "kdcl-general"):
        stored = json.loads((tmp_path / f"seed0/{variant}/config.json").read_text())
        assert stored["validation_size"] == 100
    assert not (tmp_path / "seed0" / "dml" / "export").exists()
    assert (tmp_path / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_mimicry_refuses_the_settings_it_sets(tmp_path):
    result = _compare_mimicry(f"--output_dir={tmp_path}", "--mimicry=kdcl")
    assert result.returncode == 1
    assert "--mimicry: set per run by compare_mimicry.py" in result.stderr
    assert not os.listdir(tmp_path)
