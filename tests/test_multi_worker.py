"""MultiWorkerMirroredStrategy with two real worker processes on 127.0.0.1,
stopped after one epoch and resumed by two new ones from the chief's
checkpoint: both end with the weights and logged losses of an uninterrupted
one-process run on the same global batches."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multi_worker_job.py")
TIMEOUT = 300
# Under pytest-xdist, every test that picks free ports for workers runs in one
# test process, so two tests cannot pick the same port at once.
pytestmark = pytest.mark.xdist_group("ports")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _weights(path):
    with np.load(path) as saved:
        count = len([f for f in saved.files if f.startswith("arr_")])
        return [saved[f"arr_{i}"] for i in range(count)], bool(saved["chief"])


def _losses(path):
    with np.load(path) as saved:
        return saved["losses"]


@pytest.mark.slow
def test_two_workers_match_one_process_and_resume(tmp_path):
    single = subprocess.run(
        [sys.executable, JOB, str(tmp_path / "single.npz")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )
    assert single.returncode == 0, single.stderr[-3000:]

    # Two workers stop after epoch 1 of 2; two new ones resume from the chief's
    # checkpoint and finish.
    _run_workers(tmp_path, "1")
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1
    _run_workers(tmp_path, "2")

    expected, _ = _weights(tmp_path / "single.npz")
    (first, first_chief), (second, second_chief) = (
        _weights(tmp_path / f"worker{i}.npz") for i in range(2)
    )
    assert (first_chief, second_chief) == (True, False)
    for a, b, c in zip(first, second, expected):
        np.testing.assert_array_equal(a, b)  # Replicas stay in sync.
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
    # The logged per-peer losses (epoch 2) are the global ones, as in one process.
    for index in range(2):
        np.testing.assert_allclose(
            _losses(tmp_path / f"worker{index}.npz")[:, -1],
            _losses(tmp_path / "single.npz")[:, -1],
            rtol=1e-5,
        )
    # Only the chief wrote into the checkpoint folder.
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2


def _run_workers(tmp_path, epochs):
    run_workers(
        lambda index: [
            sys.executable,
            JOB,
            str(tmp_path / f"worker{index}.npz"),
            str(tmp_path / "checkpoints"),
            epochs,
        ]
    )


def run_workers(command, count=2):
    """Runs `command(index)` as `count` workers of one cluster on 127.0.0.1
    and waits for all; each must succeed."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(count)]
    processes = []
    try:
        for index in range(count):
            config = {
                "cluster": {"worker": workers},
                "task": {"type": "worker", "index": index},
            }
            processes.append(
                subprocess.Popen(
                    command(index),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=_env(TF_CONFIG=json.dumps(config)),
                )
            )
        outputs = [p.communicate(timeout=TIMEOUT) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
