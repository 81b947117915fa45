"""The noisy reward model: preference losses by hand, training beats chance, saving, loading, guidance."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import diffalign as da
from diffalign.cli import main
from diffalign.trainers import get_trainer
from diffalign.trainers.losses import preference_loss
from diffalign.trainers.noisy_reward import noisy_scores

from .conftest import tiny_raw

PRESET = Path(__file__).resolve().parents[2] / "configs" / "noisy_reward_digits.yaml"


def _softplus(z):
    return math.log1p(math.exp(z))


def test_bradley_terry_and_rao_kupper_against_hand_values():
    a, b = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 0.0])
    # Bradley-Terry: -log sigmoid(d) = log(1 + e^-d)
    torch.testing.assert_close(preference_loss(a, b), torch.tensor([_softplus(-1.0), math.log(2.0), _softplus(-1.0)]))
    theta = 5.0
    tie = torch.tensor([False, True, True])
    log_theta = math.log(theta)
    win = _softplus(-(1.0 - log_theta))                                   # -log sigmoid(1 - log 5) = log(1 + 5/e)
    tie_equal = 2 * _softplus(log_theta) - math.log(theta**2 - 1)         # = log(36 / 24) = log 1.5
    tie_apart = _softplus(-(1.0 - log_theta)) + _softplus(1.0 + log_theta) - math.log(theta**2 - 1)
    assert tie_equal == pytest.approx(math.log(1.5))
    torch.testing.assert_close(preference_loss(a, b, tie, theta), torch.tensor([win, tie_equal, tie_apart]))
    with pytest.raises(da.DiffalignError, match="no ties"):
        preference_loss(a, b, tie)
    with pytest.raises(da.DiffalignError, match="theta must be > 1"):
        preference_loss(a, b, tie, 1.0)


def _config(tmp_path, **method):
    from diffalign.trainers import config_from_dict

    raw = tiny_raw("noisy_reward", train={"max_steps": 150, "learning_rate": 3e-3}, **method)
    raw.update({"pool_size": 400, "holdout_pairs": 400, "sample_steps": 10, "pairs_per_micro_batch": 128, "hidden": 128})
    raw.update(method)
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("noisy_reward")
    trainer = get_trainer("noisy_reward")(_config(directory), directory)
    trainer.train()
    return trainer, directory


def test_training_beats_chance_on_held_out_pairs(trained):
    trainer, directory = trained
    evaluation = json.loads((directory / "final" / "eval.json").read_text())
    accuracy = evaluation["pairwise_accuracy"]
    assert set(accuracy) == {"0", "0.25", "0.5", "0.75", "0.9"}
    assert accuracy["0"] > 0.65 and accuracy["0.5"] > 0.55, accuracy
    independent = evaluation["pairwise_accuracy_independent_noise"]
    assert independent["0"] == accuracy["0"] and independent["0.5"] > 0.55, independent
    assert evaluation["heldout_pairs"] > 300


def test_saved_model_loads_as_a_reward_and_guides(trained):
    trainer, directory = trained
    for path in (directory, directory / "final"):
        reward = da.rewards.get("noisy-reward", path=str(path))
        x, t = torch.randn(5, 1, 8, 8), torch.full((5,), 0.3)
        with torch.no_grad():
            torch.testing.assert_close(reward.score_noisy(x, t), trainer.reward_net(x, t))
            images = torch.rand(5, 1, 8, 8)
            torch.testing.assert_close(reward(images), trainer.reward_net(images * 2 - 1, torch.zeros(5)))
    model = da.load_model("digits-flow")
    guided = da.RewardGuidance(model, reward, scale=2.0)
    assert guided.evals_for(None) == 1  # no backward pass through the denoiser
    out = da.sample(guided, None, num_samples=3, steps=4, seed=0, progress=False)
    assert out.nfe == 12 and torch.isfinite(out.samples).all()
    with torch.no_grad():
        shifted = guided.predict(x, t).flow - model.predict(x, t).flow
    assert shifted.abs().max() > 0


def test_pairs_share_noise_and_time(tiny_config, tmp_path):
    trainer = get_trainer("noisy_reward")(tiny_config("noisy_reward"), tmp_path)
    batch = trainer.make_micro_batch(0, 0, torch.Generator().manual_seed(0))
    assert batch["noise"].shape == batch["a"].shape and batch["t"].shape == (batch["a"].shape[0],)
    same = batch["a"].clone()  # identical members, noised together, must score identically
    sa, sb = noisy_scores(trainer.reward_net, trainer.model.schedule, same, same.clone(), batch["noise"], batch["t"])
    assert torch.equal(sa, sb)


def test_resume_is_exact(tiny_config, tmp_path):
    config = tiny_config("noisy_reward", train={"max_steps": 4})
    whole = get_trainer("noisy_reward")(config, tmp_path / "whole")
    whole.train()
    first = get_trainer("noisy_reward")(config, tmp_path / "split")
    first.train(max_steps=2)
    second = get_trainer("noisy_reward")(config, tmp_path / "split")
    second.train()
    for name, p in whole.reward_net.named_parameters():
        assert torch.equal(p, dict(second.reward_net.named_parameters())[name]), name


def test_pairs_file_with_ties(tmp_path, tiny_config):
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    winners = torch.rand(40, 1, 8, 8, generator=generator) * 0.5 + 0.5
    losers = torch.rand(40, 1, 8, 8, generator=generator) * 0.5 - 1.0
    tie = torch.zeros(40)
    tie[::5] = 1
    save_file({"winners": winners, "losers": losers, "tie": tie}, str(tmp_path / "pairs.safetensors"))
    config = tiny_config("noisy_reward", pairs_file=str(tmp_path / "pairs.safetensors"), ties=True,
                         train={"max_steps": 20, "learning_rate": 3e-3})
    trainer = get_trainer("noisy_reward")(config, tmp_path / "run")
    trainer.train()
    assert trainer.evaluation["pairwise_accuracy"]["0"] > 0.9  # brightness separates these pairs
    refused = tiny_config("noisy_reward", pairs_file=str(tmp_path / "pairs.safetensors"))
    with pytest.raises(da.DiffalignError, match="marks 8 tie"):
        get_trainer("noisy_reward")(refused, tmp_path / "other")


def test_cli_trains_the_preset(tmp_path, capsys):
    preset = yaml.safe_load(PRESET.read_text())
    assert preset["method"] == "noisy_reward"
    code = main(["train", str(PRESET), "--output-dir", str(tmp_path / "run"), "--max-steps", "2",
                 "pool_size=32", "holdout_pairs=16", "sample_steps=2", "pairs_per_micro_batch=8"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert da.rewards.get("noisy-reward", path=str(tmp_path / "run")) is not None


def test_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises(da.DiffalignError, match="no noisy reward model at"):
        da.rewards.get("noisy-reward", path=str(tmp_path))


def test_clean_and_noisy_terms_add_up_in_one_objective(trained):
    _, directory = trained
    model = da.load_model("digits-flow")
    noisy = da.rewards.get("noisy-reward", path=str(directory))
    clean = da.rewards.get("digit", target=3)
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 0.4)
    with torch.no_grad():
        base = model.predict(x, t).flow
        both = da.RewardGuidance(model, {clean: 1.0, noisy: 0.5}, scale=2.0, max_grad_norm=None).predict(x, t).flow - base
        only_clean = da.RewardGuidance(model, clean, scale=2.0, max_grad_norm=None).predict(x, t).flow - base
        only_noisy = da.RewardGuidance(model, noisy, scale=1.0, max_grad_norm=None).predict(x, t).flow - base
    torch.testing.assert_close(both, only_clean + only_noisy, rtol=1e-4, atol=1e-5)
    assert only_noisy.abs().max() > 1e-4 and only_clean.abs().max() > 1e-4
