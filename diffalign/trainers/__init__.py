"""Fine-tuning: Flow-DPO / Diffusion-DPO, Flow-RWR and GRPO on accelerate, with LoRA in diffusers format.

    from diffalign.trainers import load_config, get_trainer
    config = load_config("configs/grpo_digits.yaml", ["train.max_steps=50"])
    get_trainer(config.method)(config, "runs/grpo").train()

or ``diffalign train configs/grpo_digits.yaml --output-dir runs/grpo`` (``accelerate launch -m diffalign
train ...`` for several processes). The maths lives in :mod:`~diffalign.trainers.losses`.
"""

from __future__ import annotations

from ..errors import DiffalignError, choice_error
from .base import Trainer, load_lora_into
from .config import TrainerConfig, apply_overrides, build, read_yaml
from .flow_dpo import FlowDPOConfig, FlowDPOTrainer
from .grpo import GRPOConfig, GRPOTrainer
from .rwr import RWRConfig, RWRTrainer

TRAINERS: dict[str, type[Trainer]] = {cls.name: cls for cls in (FlowDPOTrainer, RWRTrainer, GRPOTrainer)}


def get_trainer(method: str) -> type[Trainer]:
    if method not in TRAINERS:
        raise choice_error("trainer method", method, list(TRAINERS))
    return TRAINERS[method]


def config_from_dict(data: dict) -> TrainerConfig:
    """Build and check the method's Config from a raw mapping (its ``method`` key picks the class)."""
    method = data.get("method")
    if method is None:
        raise DiffalignError(f"config has no 'method' key; valid choices: {', '.join(sorted(TRAINERS))}")
    config = build(get_trainer(method).config_class, data)
    config.validate()
    return config


def load_config(path, overrides: list[str] = ()) -> TrainerConfig:
    """Read a YAML preset, apply ``key.path=value`` overrides, and check every key, type and value."""
    return config_from_dict(apply_overrides(read_yaml(path), list(overrides)))


__all__ = [
    "FlowDPOConfig", "FlowDPOTrainer", "GRPOConfig", "GRPOTrainer", "RWRConfig", "RWRTrainer", "TRAINERS",
    "Trainer", "TrainerConfig", "config_from_dict", "get_trainer", "load_config", "load_lora_into",
]
