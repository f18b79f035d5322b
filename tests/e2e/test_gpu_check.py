"""scripts/gpu_check.py (``make gpu-check``): refuses to pass without a GPU; its CPU dry run
goes through every step and prints the table (the GPU run itself needs a lent GPU)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_fails_loudly_instead_of_skipping():
    res = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, cwd=REPO)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and "no CUDA GPU" in errors[0]
    assert "--cpu-dry-run" in errors[0] and "Traceback" not in res.stderr


@pytest.mark.slow
def test_cpu_dry_run_goes_through_every_step(tmp_path):
    res = subprocess.run([sys.executable, SCRIPT, "--cpu-dry-run", "--docs", "120",
                          "--train-steps", "2", "--work", tmp_path], capture_output=True,
                         text=True, cwd=REPO, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    table = [line for line in res.stdout.splitlines() if line.startswith("| ")]
    steps = [line.split("|")[1].strip() for line in table[1:]]  # table[0]: the header
    assert steps == ["embed + index build", "nprobe on a GPU index", "reader training",
                     "reader predict", "LLM reader"]
    assert all(line.rstrip().endswith("| yes |") for line in table[1:]), table
