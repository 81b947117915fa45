"""Each training script runs end to end for a few steps on a tiny configuration (never retrains the shipped models)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import diffalign as da

ROOT = Path(__file__).resolve().parent.parent


def _run(script, *args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("script,kind", [("train_digits.py", "eps"), ("train_digits_flow.py", "flow")])
def test_generator_scripts(tmp_path, script, kind):
    out = tmp_path / "model"
    _run(script, "--steps", "3", "--batch-size", "8", "--tiny", "--out", str(out))
    model = da.load_model(str(out))
    assert model.prediction == kind
    sample = da.sample(model, None, num_samples=2, steps=2, cond=1)
    assert sample.samples.shape == (2, 1, 8, 8)


def test_classifier_script(tmp_path):
    from diffalign.models.classifier import DigitClassifier

    stdout = _run("train_classifier.py", "--epochs", "1", "--out", str(tmp_path / "clf"))
    assert "held-out accuracy" in stdout
    DigitClassifier.from_pretrained(tmp_path / "clf")


def test_shapes_clip_script_with_the_position_objective(tmp_path):
    import json

    from diffalign.shapes.clip import load_shapes_clip

    out = tmp_path / "clip"
    _run("train_shapes_clip.py", "--steps", "3", "--batch", "16", "--position-aux-weight", "1", "--out", str(out))
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["position_aux_weight"] == 1 and summary["final_position_loss"] > 0
    load_shapes_clip(out)  # the head is training-only: the folder is a plain CLIPModel
