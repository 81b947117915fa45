"""Fine-tuning: Flow-DPO / Diffusion-DPO, Flow-RWR and GRPO on accelerate, with LoRA in diffusers format;
and the noisy reward model of Flow-NRG guidance (``noisy_reward``).

    from diffalign.trainers import load_config, get_trainer
    config = load_config("configs/grpo_digits.yaml", ["train.max_steps=50"])
    get_trainer(config.method)(config, "runs/grpo").train()

or ``diffalign train configs/grpo_digits.yaml --output-dir runs/grpo`` (``accelerate launch -m diffalign
train ...`` for several processes). Each method is a Config (``<method>_config.py``, no torch: the CLI
checks a config before importing torch; :mod:`~diffalign.trainers.configs` lists them) and a Trainer
(``<method>.py``); the maths lives in :mod:`~diffalign.trainers.losses`.
"""

from __future__ import annotations

import importlib

from .config import TrainerConfig
from .configs import METHODS, config_from_dict, load_config

# method -> (module, Trainer class name)
_TRAINERS = {"flow_dpo": (".flow_dpo", "FlowDPOTrainer"), "rwr": (".rwr", "RWRTrainer"), "grpo": (".grpo", "GRPOTrainer"),
             "noisy_reward": (".noisy_reward", "NoisyRewardTrainer"), "hypernoise": (".hypernoise", "HyperNoiseTrainer")}
_LAZY = {cls: (module, cls) for module, cls in _TRAINERS.values()}
_LAZY.update({"Trainer": (".base", "Trainer"), "load_lora_into": (".base", "load_lora_into"),
              "FlowDPOConfig": (".flow_dpo_config", "FlowDPOConfig"), "RWRConfig": (".rwr_config", "RWRConfig"),
              "GRPOConfig": (".grpo_config", "GRPOConfig"),
              "NoisyRewardConfig": (".noisy_reward_config", "NoisyRewardConfig"),
              "HyperNoiseConfig": (".hypernoise_config", "HyperNoiseConfig")})


def get_trainer(method: str):
    """The Trainer class of a method name (imports torch)."""
    from ..errors import choice_error

    if method not in _TRAINERS:
        raise choice_error("trainer method", method, list(_TRAINERS))
    module, name = _TRAINERS[method]
    return getattr(importlib.import_module(module, __name__), name)


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module, __name__), attr)
    raise AttributeError(f"module 'diffalign.trainers' has no attribute {name!r}")


__all__ = ["METHODS", "TrainerConfig", "config_from_dict", "get_trainer", "load_config", *sorted(_LAZY)]
