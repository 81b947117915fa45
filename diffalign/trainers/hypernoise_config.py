"""The configuration of the ``hypernoise`` trainer (fields documented by their help text; see hypernoise.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config import TrainerConfig, option, refuse_prompt_data, require


@dataclass
class HyperNoiseConfig(TrainerConfig):
    method: str = option("hypernoise", "trainer name")
    form: Literal["lora", "mlp"] = option("lora", "the hypernetwork: a LoRA on the generator's network at t = 1 (model.lora_* options), or a separate MLP")
    hidden: int = option(256, "MLP form: width of the hidden layers")
    layers: int = option(2, "MLP form: hidden layers")
    generator_steps: int = option(2, "Euler steps of the frozen few-step generator g")
    noises_per_micro_batch: int = option(64, "initial noises z per micro-batch")
    reward_weight: float = option(1.0, "weight of the reward against the noise KL: loss = ||f||^2/2 - reward_weight * r; the reference's lambda * mean(f^2) - r is reward_weight = d / (2 lambda), d = elements of z")
    exact_logdet: bool = option(False, "add the exact KL terms Tr J - log det(I + J) (d extra backward passes per step)")

    def validate(self) -> None:
        super().validate()
        refuse_prompt_data(self, "its noise hypernetwork is trained for one condition")
        for key in ("hidden", "layers", "generator_steps", "noises_per_micro_batch"):
            require(getattr(self, key) >= 1, key, getattr(self, key), ">= 1")
        require(self.reward_weight > 0, "reward_weight", self.reward_weight, "> 0")
