"""Two processes (gloo on CPU) equal one process with twice the gradient accumulation."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from .conftest import tiny_raw

ROOT = Path(__file__).resolve().parents[2]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def _lora(directory):
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / "final" / "pytorch_lora_weights.safetensors"))


def _config(tmp_path, accumulation):
    path = tmp_path / f"rwr-{accumulation}.yaml"
    path.write_text(yaml.safe_dump(tiny_raw("rwr", train={"max_steps": 2, "gradient_accumulation_steps": accumulation})))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["accelerate", "torchrun"])
def test_two_processes_match_one_process_with_doubled_accumulation(tmp_path, launcher):
    single = subprocess.run([sys.executable, "-m", "diffalign", "train", _config(tmp_path, 2), "--output-dir", str(tmp_path / "one")],
                            env=_env(), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    bindir = Path(sys.executable).parent
    if launcher == "accelerate":  # the README's command: --multi_gpu is accelerate's multi-process launcher, GPUs or not
        launch = [str(bindir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "diffalign"]
    else:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "diffalign"]
    if launcher == "accelerate" and not (bindir / "accelerate").exists() and not shutil.which("accelerate"):
        pytest.skip("accelerate's launcher is not installed beside this Python")
    double = subprocess.run(launch + ["train", _config(tmp_path, 1), "--output-dir", str(tmp_path / "two")],
                            env=_env(), capture_output=True, text=True)
    assert double.returncode == 0, double.stderr[-2000:]
    assert "on 2 processes" in double.stdout, double.stdout
    expected, got = _lora(tmp_path / "one"), _lora(tmp_path / "two")
    assert expected.keys() == got.keys()
    moved = max((expected[k] - _lora_init(k, expected[k])).abs().max().item() for k in expected)
    assert moved > 0
    for key in expected:  # equal up to the order of float summation across processes
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-7)


def _lora_init(key, value):
    return torch.zeros_like(value) if "lora_B" in key else value
