"""Memory caps (issue 22, runs and files 7). Failed before: lora_rank: 100000000 and a noisy-reward
config.json with a huge hidden allocated tens of GB before failing (or succeeding)."""

import json

from pathlib import Path

import pytest

from diffalign.cli import main
from diffalign.errors import DiffalignError
from diffalign.trainers import get_trainer
from diffalign.noisy_reward_files import check_noisy_reward_files

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CONFIG = str(CONFIGS / "grpo_digits.yaml")


@pytest.mark.parametrize("override,key", [("model.lora_rank=100000000", "model.lora_rank")])
def test_a_huge_lora_rank_is_refused_before_torch(tmp_path, capsys, override, key):
    assert main(["train", CONFIG, "--output-dir", str(tmp_path / "r"), override]) == 2
    assert repr(key) in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_a_huge_noisy_reward_hidden_is_refused_before_torch(tmp_path, capsys):
    assert main(["train", str(CONFIGS / "noisy_reward_digits.yaml"), "--output-dir", str(tmp_path / "r"), "hidden=1000000"]) == 2
    assert "'hidden'" in capsys.readouterr().err


def test_a_lora_rank_above_the_models_layers_is_refused_before_allocation(tiny_config, tmp_path):
    with pytest.raises(DiffalignError, match="exceeds every targeted layer's min"):
        get_trainer("rwr")(tiny_config("rwr", model={"lora_rank": 4000}), tmp_path)


def test_a_noisy_reward_config_is_checked_against_its_weights_file(tmp_path):
    from diffalign.rewards.noisy_model import NoisyRewardNet

    NoisyRewardNet((1, 8, 8), hidden=32).save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    check_noisy_reward_files(config, tmp_path / "model.safetensors")  # the real pair passes
    with pytest.raises(DiffalignError, match="do not match"):
        check_noisy_reward_files({**config, "hidden": 10000}, tmp_path / "model.safetensors")
    with pytest.raises(DiffalignError, match="out of range"):
        check_noisy_reward_files({**config, "hidden": 10**9}, tmp_path / "model.safetensors")
