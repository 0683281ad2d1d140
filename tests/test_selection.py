"""Choosing a regime on the validation split (keras_dml.training.selection,
scripts/choose_settings.py): the test set is never read."""

import json

import pytest

from keras_dml.training import compare, selection
from keras_dml.training import config as settings


def _outcome(validation, training):
    last = {"epoch": 3}
    for i, (v, t) in enumerate(zip(validation, training)):
        last.update({f"val_peer{i}_accuracy": v, f"peer{i}_accuracy": t})
    # A test top-1 that would win if it were read.
    return {
        "peer_names": ["a", "b"],
        "history": [{"epoch": 1}, last],
        "top1": {"peer0": 1.0, "peer1": 1.0},
    }


def test_the_best_validation_top1_among_candidates_that_fit_wins(tmp_path, monkeypatch):
    grid = selection.candidates([("cnn_small", "cnn_wide")], [10, 20], [1e-3, 3e-3])
    labels = [label for label, _ in grid]
    assert labels == [
        "cnn_small+cnn_wide 10ep lr0.001",
        "cnn_small+cnn_wide 10ep lr0.003",
        "cnn_small+cnn_wide 20ep lr0.001",
        "cnn_small+cnn_wide 20ep lr0.003",
    ]
    assert all(c["independent"] and not c["export"] for _, c in grid)
    measured = {
        labels[0]: ([0.90, 0.92], [0.995, 1.0]),
        labels[1]: ([0.99, 0.99], [0.97, 1.0]),  # Best, but does not fit.
        labels[2]: ([0.93, 0.95], [1.0, 1.0]),  # Best that fits.
        labels[3]: ([0.92, 0.94], [1.0, 1.0]),
    }
    seen = {}

    def fake_run_variants(base, variants, seeds, output_dir, print_fn):
        seen["variants"] = [(v.label, v.changes) for v in variants]
        for variant in variants:  # What is printed: validation, never test.
            assert variant.scored(_outcome([0.5, 0.25], [1, 1])) == {
                "a (validation)": 0.5,
                "b (validation)": 0.25,
            }
        return {v.label: [_outcome(*measured[v.label])] * seeds for v in variants}

    monkeypatch.setattr(compare, "run_variants", fake_run_variants)
    base = settings.resolve(
        {"dataset": "digits", "model_dir": str(tmp_path), "validation_size": 100}
    )
    summary = selection.select(base, grid, 2, str(tmp_path))
    assert summary["chosen"] == labels[2] and summary["any_fits"]
    assert seen["variants"] == grid
    table = (tmp_path / "selection.md").read_text()
    assert f"| {labels[2]} **(chosen)** | 93.00 / 95.00 | 94.00 |" in table
    assert "97.00 / 100.00 (does not fit)" in table
    assert json.loads((tmp_path / "selection.json").read_text())["chosen"] == labels[2]

    measured = {label: ([0.5, 0.6], [0.9, 0.9]) for label in labels}
    measured[labels[3]] = ([0.7, 0.6], [0.9, 0.9])
    summary = selection.select(base, grid, 1, str(tmp_path))
    assert summary["chosen"] == labels[3] and not summary["any_fits"]
    assert "None fits: the best overall." in summary["table"]


def test_without_a_validation_split_nothing_is_chosen(tmp_path):
    base = settings.resolve(
        {"dataset": "digits", "model_dir": str(tmp_path), "validation_size": 0}
    )
    with pytest.raises(ValueError, match="needs a validation split"):
        selection.select(base, selection.candidates([("a", "b")], [1], [1.0]), 1, "x")


@pytest.mark.slow
def test_real_runs_are_scored_from_their_validation_logs(tmp_path):
    base = settings.resolve(
        {
            "dataset": "digits",
            "model_dir": str(tmp_path),
            "smoke_test": True,
            "verbose": 0,
            "validation_size": 4,
        }
    )
    grid = selection.candidates([("cnn_small", "cnn_small")], [1], [1e-3])
    printed = []
    summary = selection.select(base, grid, 1, str(tmp_path), print_fn=printed.append)
    (line,) = printed  # Validation only: the test top-1 is never shown.
    assert "(validation)" in line and "ensemble" not in line
    (row,) = summary["rows"]
    assert len(row["validation_top1"]) == 2 and len(row["train_top1"]) == 2
    assert all(0 <= v <= 1 for v in row["validation_top1"] + row["train_top1"])
