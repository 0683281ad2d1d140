"""Every script in benchmarks/ runs at tiny settings and prints its table, so
a change that breaks a benchmark fails here (the numbers are not checked:
benchmarks are measured, never asserted)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, "benchmarks")
# Helpers the scripts import, not scripts.
MODULES = {"flops.py", "timing.py"}
SMOKE_RUNS = {
    "cifar_table_time.py": (
        ["--pairs=resnet8+resnet8", "--repeats=1", "--steps=1"],
        "| resnet8+resnet8 |",
    ),
    "backend_step.py": (
        # The GPU matrix's settings (steps inside fit, float16), one cell:
        # float16 is slow on a CPU.
        [
            "--smoke",
            "--gpu",
            "--output=",
            "--peers=resnet32",
            "--cohort_sizes=2",
            "--precisions=mixed_float16",
        ],
        "| resnet32 | 2 | mixed_float16 |",
    ),
    "dml_step.py": (["--smoke"], "| K | DML step (s) |"),
    "input_pipeline.py": (["--smoke"], "| CIFAR-100 (batch 64) |"),
    "profile_step.py": (["--smoke"], "| op type | ms / step | share |"),
    # With or without PyTorch (the `bench` extra): keras_dml's rows at least.
    "pytorch_step.py": (["--smoke"], "| keras_dml float32 |"),
    "jax_step.py": (["--smoke"], "| JAX by hand float32 |"),
    "reid_eval.py": (
        ["--scale=0.02", "--fastreid=off", "--repeats=1", "--reference_repeats=1"],
        "| `evaluate_ranking` (a distance matrix) |",
    ),
}


def test_every_script_has_a_smoke_run():
    scripts = {
        name
        for name in os.listdir(BENCHMARKS)
        if name.endswith(".py") and name not in MODULES
    }
    assert scripts == set(SMOKE_RUNS)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_runs_and_prints_its_table(script):
    flags, table_line = SMOKE_RUNS[script]
    result = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, script), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert table_line in result.stdout, result.stdout[-3000:]
