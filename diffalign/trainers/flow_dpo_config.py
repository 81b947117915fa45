"""The configuration of the ``flow_dpo`` trainer (fields documented by their help text; see flow_dpo.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from .config import TrainerConfig, option, require


@dataclass
class FlowDPOConfig(TrainerConfig):
    method: str = option("flow_dpo", "trainer name")
    beta: float = option(500.0, "DPO inverse temperature beta")
    beta_schedule: Literal["constant", "timestep"] = option("constant", "constant beta, or the derived timestep beta (losses.timestep_beta): beta (1 - t)^2 on rectified flows, beta itself on eps-models")
    pairs_file: Optional[str] = option(None, "safetensors file of preference pairs (winners, losers[, cond]); null = online pairs")
    pairs_per_micro_batch: int = option(4, "preference pairs per micro-batch")
    group_size: int = option(8, "online pairs: samples per group (best vs worst)")
    noise_draws: int = option(4, "(noise, t) draws per pair and step")
    sample_steps: int = option(20, "online pairs: sampling steps")
    kernel: Optional[str] = option(None, "online pairs: sampling kernel (default: the schedule's stochastic one)")
    kernel_options: dict = option({}, "options of the sampling kernel")

    def validate(self) -> None:
        super().validate()
        require(self.beta > 0, "beta", self.beta, "> 0")
        for key in ("pairs_per_micro_batch", "noise_draws", "sample_steps"):
            require(getattr(self, key) >= 1, key, getattr(self, key), ">= 1")
        require(self.group_size >= 2, "group_size", self.group_size, ">= 2")

