"""`digits-fast`: the embedded few-step generator loads offline through the same path as the other
embedded models, samples correctly in 2 steps, and its training script runs end to end."""

import os
import subprocess
import sys
from pathlib import Path

import torch

import diffalign as da
from diffalign.evaluation import classify
from diffalign.zoo import DATA_DIR, EMBEDDED

ROOT = Path(__file__).resolve().parent.parent


def test_digits_fast_loads_offline_like_the_other_embedded_models():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert EMBEDDED["digits-fast"] == DATA_DIR / "digits-fast"
    model = da.load_model("digits-fast")
    by_path = da.load_model(str(DATA_DIR / "digits-fast"))
    assert type(model).__name__ == "SD3Denoiser" and type(model.network).__name__ == "SD3Transformer2DModel"
    assert model.prediction == "flow" and model.shape == (1, 8, 8)
    for a, b in zip(model.state_dict().values(), by_path.state_dict().values()):
        assert torch.equal(a, b)


def test_two_euler_steps_draw_the_requested_classes():
    model = da.load_model("digits-fast")
    labels = torch.arange(10).repeat(3)
    out = da.sample(model, None, kernel="euler", num_samples=len(labels), steps=2, cond=labels, seed=0)
    assert out.nfe == 2 * len(labels)  # guidance is distilled in: one pass per step
    accuracy = (classify(model.decode(out.samples)) == labels).float().mean().item()
    assert accuracy >= 0.8, accuracy


def test_training_script_runs_end_to_end(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    out = tmp_path / "fast"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_digits_fast.py"), "--pairs", "16", "--teacher-steps", "2",
                           "--steps", "2", "--batch-size", "4", "--out", str(out)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = da.load_model(str(out))
    assert da.sample(model, None, kernel="euler", num_samples=2, steps=1, cond=3).samples.shape == (2, 1, 8, 8)


def test_digits_fast_carries_its_own_default_kernel_and_steps(tmp_path, capsys):
    """Issue 22, newcomer 2. Failed before: the default kernel (flow-sde) gave pure noise at 2 steps,
    from da.sample and from the CLI, while the printed reward looked plausible."""
    from diffalign.cli import main

    model = da.load_model("digits-fast")
    assert model.schedule.default_kernel_name() == "euler" and model.default_steps == 2
    assert da.load_model(str(DATA_DIR / "digits-fast")).schedule.default_kernel_name() == "euler"
    assert da.load_model("digits-flow").schedule.default_kernel_name() == "flow-sde"
    labels = torch.arange(10).repeat(2)
    out = da.sample(model, None, num_samples=len(labels), steps=model.default_steps, cond=labels, seed=0)
    assert (classify(model.decode(out.samples)) == labels).float().mean().item() >= 0.8
    assert main(["sample", "--model", "digits-fast", "--cond", "3", "--num-samples", "4", "--out", str(tmp_path / "g.png")]) == 0
    assert ", 8 NFE," in capsys.readouterr().out  # 4 samples x 2 steps: the model's own step count
