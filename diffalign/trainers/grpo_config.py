"""The configuration of the ``grpo`` trainer (fields documented by their help text; see grpo.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from .config import TrainerConfig, option, require


@dataclass
class GRPOConfig(TrainerConfig):
    method: str = option("grpo", "trainer name")
    group_size: int = option(16, "samples per group (one condition); advantages are normalised within it")
    groups_per_micro_batch: int = option(2, "groups per micro-batch")
    sample_steps: int = option(10, "sampler steps of a rollout")
    noise_level: float = option(0.7, "flow models: the flow SDE's noise level a")
    eta: float = option(1.0, "eps/v models: DDIM eta (> 0)")
    kernel: Optional[str] = option(None, "override the kernel by name (must be stochastic)")
    kernel_options: dict = option({}, "options of an overriding kernel")
    clip_range: float = option(1e-3, "PPO clip range c, on the scale of log_prob_reduction")
    log_prob_reduction: Literal["mean", "sum"] = option("mean", "per-step log-prob: per-element mean (Flow-GRPO) or sum")
    kl_coef: float = option(0.0, "weight of the exact per-step KL to the reference policy (adapters disabled); Flow-GRPO's beta is kl_coef / dt, i.e. kl_coef = beta * dt (losses.gaussian_kl)")
    inner_epochs: int = option(1, "optimizer updates per batch of rollouts")
    timestep_fraction: float = option(1.0, "share of the stochastic steps trained per micro-batch")
    advantage_eps: float = option(1e-4, "added to the group std")

    def validate(self) -> None:
        super().validate()
        require(self.group_size >= 2, "group_size", self.group_size, ">= 2")
        for key in ("groups_per_micro_batch", "inner_epochs"):
            require(getattr(self, key) >= 1, key, getattr(self, key), ">= 1")
        require(self.sample_steps >= 2, "sample_steps", self.sample_steps, ">= 2 (the last step is deterministic)")
        require(self.clip_range > 0, "clip_range", self.clip_range, "> 0")
        require(self.kl_coef >= 0, "kl_coef", self.kl_coef, ">= 0")
        require(0 < self.timestep_fraction <= 1, "timestep_fraction", self.timestep_fraction, "in (0, 1]")
        require(0 < self.eta <= 1, "eta", self.eta, "in (0, 1]")
        require(self.noise_level > 0, "noise_level", self.noise_level, "> 0")
        # eps = 0 divides a tied group's zero deviations by a zero std: NaN advantages
        require(self.advantage_eps > 0, "advantage_eps", self.advantage_eps, "> 0")

