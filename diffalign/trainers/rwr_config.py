"""The configuration of the ``rwr`` trainer (fields documented by their help text; see rwr.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from .config import TrainerConfig, option, require


@dataclass
class RWRConfig(TrainerConfig):
    method: str = option("rwr", "trainer name")
    temperature: float = option(1.0, "tau in w = exp(r / tau)")
    weighting: Literal["exp", "group-softmax"] = option("exp", "exp(r / tau), or a softmax within each group")
    group_size: int = option(8, "samples per group (one condition)")
    groups_per_micro_batch: int = option(4, "groups per micro-batch")
    noise_draws: int = option(2, "(noise, t) draws per sample and step")
    sample_steps: int = option(20, "sampling steps")
    kernel: Optional[str] = option(None, "sampling kernel (default: the schedule's stochastic one)")
    kernel_options: dict = option({}, "options of the sampling kernel")

    def validate(self) -> None:
        super().validate()
        require(self.temperature > 0, "temperature", self.temperature, "> 0")
        for key in ("group_size", "groups_per_micro_batch", "noise_draws", "sample_steps"):
            require(getattr(self, key) >= 1, key, getattr(self, key), ">= 1")

