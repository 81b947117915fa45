"""The configuration of the ``noisy_reward`` trainer (fields documented by their help text; see noisy_reward.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..noisy_reward_files import MAX_HIDDEN, MAX_TIME_FEATURES
from .config import TrainerConfig, option, refuse_prompt_data, require


@dataclass
class NoisyRewardConfig(TrainerConfig):
    method: str = option("noisy_reward", "trainer name")
    pairs_file: Optional[str] = option(None, "safetensors file of preference pairs (winners, losers[, tie]); null = pairs from base samples labelled by the reward")
    pool_size: int = option(2000, "base samples drawn once and labelled by the reward (pairs are drawn from them)")
    holdout_fraction: float = option(0.2, "fraction of the samples (or of the file's pairs) held out for evaluation")
    holdout_pairs: int = option(2000, "held-out pairs evaluated at the end (base-sample pairs)")
    sample_steps: int = option(20, "sampling steps of the base samples")
    kernel: Optional[str] = option(None, "sampling kernel of the base samples (default: the schedule's stochastic one)")
    kernel_options: dict = option({}, "options of the sampling kernel")
    pairs_per_micro_batch: int = option(128, "preference pairs per micro-batch (each noised once, both with the same noise and t)")
    ties: bool = option(False, "model ties (Rao-Kupper) instead of plain Bradley-Terry")
    theta: float = option(5.0, "Rao-Kupper tie parameter theta > 1 (with ties: true)")
    tie_margin: float = option(0.05, "base-sample pairs whose rewards differ by less than this are ties (with ties: true)")
    t_min: float = option(0.0, "smallest training time")
    t_max: float = option(1.0, "largest training time (t = 1 is noise)")
    hidden: int = option(256, "width of the reward network's hidden layers")
    time_features: int = option(8, "Fourier features of t")
    eval_times: list = option([0.0, 0.25, 0.5, 0.75, 0.9], "times at which held-out pairwise accuracy is reported")

    def validate(self) -> None:
        super().validate()
        refuse_prompt_data(self, "its reward model is trained on one condition's samples")
        for key in ("pool_size", "holdout_pairs", "sample_steps", "pairs_per_micro_batch", "hidden", "time_features"):
            require(getattr(self, key) >= 1, key, getattr(self, key), ">= 1")
        require(self.hidden <= MAX_HIDDEN, "hidden", self.hidden, f"<= {MAX_HIDDEN} (the net has hidden^2 weights)")
        require(self.time_features <= MAX_TIME_FEATURES, "time_features", self.time_features, f"<= {MAX_TIME_FEATURES}")
        require(0 < self.holdout_fraction < 1, "holdout_fraction", self.holdout_fraction, "in (0, 1)")
        require(self.theta > 1, "theta", self.theta, "> 1")
        require(self.tie_margin >= 0, "tie_margin", self.tie_margin, ">= 0")
        require(0 <= self.t_min <= self.t_max <= 1, "t_min", (self.t_min, self.t_max), "with t_max in 0 <= t_min <= t_max <= 1")
        require(all(isinstance(t, (int, float)) and 0 <= t <= 1 for t in self.eval_times) and bool(self.eval_times),
                "eval_times", self.eval_times, "a non-empty list of times in [0, 1]")
