"""The ``hypernoise`` trainer: a few steps raise the reward on a fixed batch; final weights load as a
sampler; the exact log-det option runs; a non-differentiable reward is refused; the CLI end to end."""

from pathlib import Path

import pytest
import torch

import diffalign as da
from diffalign.cli import main
from diffalign.models.hypernetwork_forms import load_hypernetwork
from diffalign.trainers import config_from_dict, get_trainer

PRESET = Path(__file__).resolve().parents[2] / "configs" / "hypernoise_digits.yaml"


def _raw(**fields):
    raw = {"method": "hypernoise", "seed": 0,
           "model": {"name": "digits-flow", "lora_rank": 4, "lora_target_modules": ["to_q", "to_v", "ff.net.2"]},
           "reward": {"name": "digit", "options": {"target": 3}},
           "train": {"max_steps": 2, "learning_rate": 1e-3, "checkpoint_every": 0, "report_to": "none"},
           "generator_steps": 1, "noises_per_micro_batch": 16}
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


@pytest.mark.parametrize("form", ["lora", "mlp"])
def test_a_few_steps_raise_the_reward_on_a_fixed_batch(tmp_path, form):
    config = config_from_dict(_raw(form=form, hidden=64, reward_weight=10.0, train={"max_steps": 2, "learning_rate": 1e-2}))
    trainer = get_trainer("hypernoise")(config, tmp_path)
    batch = trainer.make_micro_batch(0, 0, torch.Generator().manual_seed(1))
    rewards = []
    for _ in range(10):
        loss, metrics = trainer.compute_loss(batch, 0)
        rewards.append(metrics["reward"])
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    assert rewards[-1] > rewards[0] + 0.5, rewards
    # the run's final weights load back as the same hypernetwork
    trainer.train()
    loaded = load_hypernetwork(tmp_path / "final", trainer.model)
    z = batch["z"][:4]
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), trainer.hypernetwork(z), rtol=0, atol=1e-6)


def test_exact_logdet_option_runs_and_reports_the_correction(tmp_path):
    config = config_from_dict(_raw(form="mlp", hidden=16, exact_logdet=True, noises_per_micro_batch=4, train={"max_steps": 1}))
    trainer = get_trainer("hypernoise")(config, tmp_path)
    metrics = trainer.train()
    # zero initialisation: J = 0, so Tr J - log det(I + J) = 0 at the first step
    assert metrics["logdet_correction"] == pytest.approx(0.0, abs=1e-6)


def test_non_differentiable_reward_is_refused(tmp_path):
    config = config_from_dict(_raw(reward={"name": "compressibility", "options": {}}))
    with pytest.raises(da.DiffalignError, match="needs a differentiable reward"):
        get_trainer("hypernoise")(config, tmp_path)


def test_preset_trains_and_samples_through_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(PRESET), "--output-dir", str(out), "--max-steps", "1", "model.name=digits-flow",
                 "noises_per_micro_batch=4", "train.report_to=none"]) == 0
    assert (out / "final" / "hypernoise.json").is_file()
    assert main(["sample", "--model", "digits-flow", "--sampler", "hypernoise", "--option", f"path={out / 'final'}",
                 "--steps", "2", "--num-samples", "4", "--reward", "digit", "--target", "3", "--out", str(tmp_path / "s.png")]) == 0
    assert "4 samples, 16 NFE" in capsys.readouterr().out
