"""benchmarks/gpu_families.py: the CPU smoke mode runs every sampler on both families and the GRPO training
row through the real trainer; without CUDA the real run says it skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_families.py"


def _run(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), "--threads", "1", *args], env=env, capture_output=True,
                          text=True, timeout=600)


def test_smoke_mode_runs_every_sampler_on_both_families_and_the_training_row():
    proc = _run("--smoke")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = proc.stdout.strip().splitlines()[-1]
    assert result.startswith("RESULT name=gpu_families device=cpu_smoke")
    for family in ("sd15", "sd3"):
        for sampler in ("ancestral", "best_of_n", "sir", "dts"):
            assert f"{family}_{sampler}_sdpa_us_per_nfe=" in result
    # the training row: a timed GRPO LoRA step on the SD3 stand-in, and train.sharding fsdp on one process
    # reported as the unsharded run it is (Trainer.sharded read at run time)
    assert "sd3_grpo_none_s_per_step=" in result and "sd3_grpo_none_peak_gib=nan" in result
    assert "sd3_grpo_fsdp_1proc=unsharded" in result
    assert "train.sharding fsdp: no-op on 1 process" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_without_cuda_it_says_it_skipped():
    proc = _run()
    assert proc.returncode == 0
    assert "skipped: no CUDA device" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "RESULT name=gpu_families status=skipped reason=no_cuda"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_quick_run_on_cuda():
    proc = _run("--quick")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("RESULT name=gpu_families device=")
