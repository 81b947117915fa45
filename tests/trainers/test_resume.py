"""Resume is exact: a run stopped at a checkpoint (or killed with SIGKILL) and rerun ends bit-identical."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from diffalign.trainers import get_trainer

from .conftest import sigkill_once_written, tiny_raw


def _final_params(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method,train", [("grpo", {}), ("flow_dpo", {"ema_decay": 0.9, "lr_schedule": "cosine", "lr_warmup_steps": 1})])
def test_resume_from_a_checkpoint_matches_an_uninterrupted_run_bit_for_bit(tiny_config, tmp_path, method, train):
    config = tiny_config(method, train={"max_steps": 4, **train})
    whole = get_trainer(method)(config, tmp_path / "whole")
    whole.train()

    first = get_trainer(method)(config, tmp_path / "split")
    first.train(max_steps=2)  # leaves a checkpoint at step 2
    second = get_trainer(method)(config, tmp_path / "split")
    second.train()
    assert second.step == 4
    expected, got = _final_params(whole), _final_params(second)
    assert all(torch.equal(expected[n], got[n]) for n in expected)
    if whole.ema is not None:
        assert all(torch.equal(a, b) for a, b in zip(whole.ema.shadow_params, second.ema.shadow_params))


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return [sys.executable, "-m", "diffalign", "train", *args], env


def _lora(directory):
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / "final" / "pytorch_lora_weights.safetensors"))


def test_sigkill_mid_training_then_rerun_equals_an_uninterrupted_run(tmp_path):
    config = tmp_path / "rwr.yaml"
    config.write_text(yaml.safe_dump(tiny_raw("rwr", train={"max_steps": 40, "checkpoint_every": 2})))
    cmd, env = _cli(str(config), "--output-dir", str(tmp_path / "whole"))
    subprocess.run(cmd, env=env, check=True, capture_output=True)

    cmd, env = _cli(str(config), "--output-dir", str(tmp_path / "killed"))
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoints" / "step-000004"
    sigkill_once_written(process, checkpoint)
    assert not (tmp_path / "killed" / "final").exists(), "the run ended before it could be killed"

    leftover = tmp_path / "killed" / "checkpoints" / ".step-000006.partial"  # as if killed mid-write
    leftover.mkdir(exist_ok=True)
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # the same command resumes
    assert not leftover.exists()
    expected, got = _lora(tmp_path / "whole"), _lora(tmp_path / "killed")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
