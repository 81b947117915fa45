"""Flow-RWR: reward-weighted regression on the policy's own samples.

Loss (Liu et al. 2025, arXiv 2501.13918, Sec. 4.1; Peng et al. 2019 for RWR):

    E[w(x0) ||target - prediction(x_t)||^2],   w = exp(r / tau)  or  G softmax_group(r / tau)

Each step samples groups from the current policy (no gradients), scores them, and regresses the
network onto them with those weights, at ``noise_draws`` random (noise, t) per sample.
"""

from __future__ import annotations

import torch

from ..models.conditioning import index_condition

from ..samplers.rollout import resolve_kernel
from .base import Trainer
from .losses import finite_mean_std, rwr_weights, weighted_regression_loss
from .regression import generate, prediction_error, score, training_times
from .rwr_config import RWRConfig


class RWRTrainer(Trainer):
    name = "rwr"
    config_class = RWRConfig

    def __init__(self, config: RWRConfig, output_dir, accelerator=None):
        super().__init__(config, output_dir, accelerator)
        self.kernel = resolve_kernel(self.model, config.kernel, **config.kernel_options)

    def make_micro_batch(self, step, index, generator):
        c = self.config
        n = c.group_size * c.groups_per_micro_batch
        # one prompt per group: the group softmax of the weights stays within a prompt
        rows = self.rollout_rows(step, index, c.groups_per_micro_batch, c.group_size)
        samples = generate(self.policy(self.model), self.kernel, c.sample_steps, rows.cond, n, generator)
        rewards = score(self.reward, self.model, samples, rows.prompts, rows.metadata)
        weights = rwr_weights(rewards, c.temperature, c.weighting, c.group_size)
        m = n * c.noise_draws
        return {
            "x0": samples.repeat_interleave(c.noise_draws, 0),
            "weights": weights.repeat_interleave(c.noise_draws, 0).to(samples.device),
            "noise": torch.randn((m, *self.model.shape), generator=generator).to(samples),
            "t": training_times(m, generator),
            "cond": index_condition(rows.cond, torch.arange(n).repeat_interleave(c.noise_draws)) if rows.cond else None,
            "reward": finite_mean_std(rewards)[0],
        }

    def compute_loss(self, batch, update):
        errors = prediction_error(self.model, batch["x0"], batch["noise"], batch["t"], batch["cond"])
        loss = weighted_regression_loss(errors, batch["weights"])
        return loss, {"loss": loss.item(), "reward": batch["reward"], "weight_mean": batch["weights"].mean().item()}
