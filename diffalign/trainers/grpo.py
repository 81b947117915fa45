"""GRPO on the stochastic sampler (Flow-GRPO for flow models, DDPO-style GRPO on DDIM(eta) for eps-models).

The sampler is the policy: each step x_t -> x_t' is Gaussian with the kernel's mean and std
(:mod:`diffalign.trainers.trajectories`; the flow SDE of Flow-GRPO, Liu et al. 2025, arXiv 2505.05470,
eq. 8, or DDIM with eta > 0). Per step j and sample i:

    rho_ij = exp(log pi_theta(x_j+1 | x_j) - log pi_old(x_j+1 | x_j))
    A_i    = (r_i - mean_group r) / (std_group r + eps)                       (group-normalised)
    L      = mean_ij max(-A_i rho_ij, -A_i clip(rho_ij, 1 - c, 1 + c)) + kl_coef KL(pi_theta || pi_ref)

**Log-prob reduction.** Per-step log-probs are per-element *means* (``log_prob_reduction: mean``, as
Flow-GRPO does), so rho is a geometric-mean per-element ratio and ``clip_range`` is on that scale: a
clip of c on the mean equals a clip of d*c on the summed log-ratio of a d-element sample. With
``sum`` the exact trajectory likelihood ratio is clipped instead; choose clip_range accordingly.

**Last step.** The step to t = 0 is deterministic and untrained (see trajectories.py); so are all
steps of a deterministic kernel, which GRPO therefore refuses.

**What to watch.** On-policy the loss is ~1e-8: rho = 1 and the advantages average to zero within
each group, so ``loss`` says nothing about how hard the policy is pushed. ``pg_scale`` logs
mean_ij |A_i rho_ij| (about 0.8 for normalised advantages; 0 when every group's rewards tie), the
weight of each sample's log-prob gradient; ``grad_norm`` logs the gradient it produced, and the
``reward`` curve is the result.

The ratio of the first inner epoch is exactly 1 because rollouts and training compute the log-prob
with the same function on the same batch; ``ratio_error`` logs max |rho - 1| of that epoch.
"""

from __future__ import annotations

import torch

from ..errors import DiffalignError
from ..kernels import DDIM, FlowSDE
from ..samplers.rollout import resolve_kernel
from .base import Trainer
from .grpo_config import GRPOConfig
from .losses import finite_mean_std, gaussian_kl, group_advantages, ppo_clip_loss
from .trajectories import sample_trajectories, transition


class GRPOTrainer(Trainer):
    name = "grpo"
    config_class = GRPOConfig
    progress_keys = ("loss", "reward", "pg_scale", "ratio_error")

    def __init__(self, config: GRPOConfig, output_dir, accelerator=None):
        self.needs_reference = config.kl_coef > 0
        super().__init__(config, output_dir, accelerator)
        self.kernel = self._kernel()

    def _kernel(self):
        c = self.config
        if c.kernel is not None:
            kernel = resolve_kernel(self.model, c.kernel, **c.kernel_options)
        elif self.model.prediction == "flow":
            kernel = FlowSDE(noise_level=c.noise_level)
        else:
            kernel = DDIM(eta=c.eta)
        if not kernel.stochastic:
            raise DiffalignError(f"GRPO needs a stochastic kernel; {kernel!r} is deterministic")
        return kernel

    def updates_per_step(self) -> int:
        return self.config.inner_epochs

    def make_micro_batch(self, step, index, generator):
        c = self.config
        n = c.group_size * c.groups_per_micro_batch
        # a group is group_size samples of one prompt (Flow-GRPO); advantages are normalised within it
        rows = self.rollout_rows(step, index, c.groups_per_micro_batch, c.group_size)
        grid = self.model.schedule.time_grid(c.sample_steps)
        trajectories = sample_trajectories(self.policy(self.model), self.kernel, grid, rows.cond, n, generator,
                                           c.log_prob_reduction)
        rewards = self.score_rollouts(trajectories.samples, rows)  # a Future with train.async_scoring
        steps = trajectories.trainable_steps
        count = max(1, round(c.timestep_fraction * steps))
        trained = torch.randperm(steps, generator=generator)[:count].sort().values
        batch = {"trajectories": trajectories, "rewards": rewards, "trained_steps": trained.tolist()}
        return batch if self.scorer is not None else self.finish_micro_batch(batch)

    def finish_micro_batch(self, batch):
        if "advantages" in batch:
            return batch
        c = self.config
        rewards = batch.pop("rewards")
        rewards = rewards.result() if hasattr(rewards, "result") else rewards
        rewards = rewards.reshape(-1).float()
        mean, std = finite_mean_std(rewards)
        batch.update(advantages=group_advantages(rewards, c.group_size, c.advantage_eps).to(batch["trajectories"].states.device),
                     reward=mean, reward_std=std)
        return batch

    def compute_loss(self, batch, update):
        c = self.config
        traj, advantages = batch["trajectories"], batch["advantages"]
        loss = 0.0
        ratio_error, clipped, kl_total, pg_scale = 0.0, 0.0, 0.0, 0.0
        steps = batch["trained_steps"]
        for j in steps:
            x, x_next = traj.states[j], traj.states[j + 1]
            step = transition(self.policy(self.model), self.kernel, x, traj.grid[j], traj.grid[j + 1], traj.cond)
            log_prob = step.log_prob(x_next, c.log_prob_reduction)
            ppo = ppo_clip_loss(log_prob, traj.log_probs[j], advantages, c.clip_range)
            loss = loss + ppo.loss / len(steps)
            ratio_error = max(ratio_error, (ppo.ratio - 1).abs().max().item())
            clipped += ppo.clipped_fraction.item() / len(steps)
            pg_scale += ppo.pg_scale.item() / len(steps)
            if c.kl_coef > 0:
                with torch.no_grad(), self.reference_policy() as reference:
                    reference_step = transition(self.policy(reference), self.kernel, x, traj.grid[j], traj.grid[j + 1],
                                                traj.cond)
                kl = gaussian_kl(step.mean, reference_step.mean, step.std).mean()
                loss = loss + c.kl_coef * kl / len(steps)
                kl_total += kl.item() / len(steps)
        metrics = {"loss": float(loss.detach()) if torch.is_tensor(loss) else loss, "reward": batch["reward"], "reward_std": batch["reward_std"], "clipped": clipped,
                   "pg_scale": pg_scale}
        if update == 0:
            metrics["ratio_error"] = ratio_error  # max |rho - 1| on-policy: must be ~0
        if c.kl_coef > 0:
            metrics["kl"] = kl_total
        return loss, metrics
