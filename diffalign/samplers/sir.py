"""SIR: sampling-importance-resampling of full base rollouts, weights proportional to exp(lambda r(x0)).

Draw M = nfe // (steps x passes) samples from the base model, weight each by exp(lambda r(x0)) and
resample ``num_samples`` of them. As M -> inf the output converges to pi*(x0) proportional to
p(x0) exp(lambda r(x0)) -- the simplest asymptotically exact baseline for DTS (papers.md).
NaN and +inf rewards get zero weight, as in SMC and DTS.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..kernels import Kernel
from .base import SampleOutput, Sampler
from .registry import SAMPLERS
from .prompt_groups import grouped_rollouts
from .rollout import batched_rollouts, evaluate_reward, pooled_rollout_plan, resolve_kernel, too_small_budget
from .weights import effective_sample_size, multinomial_resample


@SAMPLERS.register("sir")
class SIRSampler(Sampler):
    """Importance resampling of base rollouts.

    Args:
        lam: inverse temperature of the target p(x0) exp(lam r(x0)).
        kernel, kernel_options: the base kernel (default: the schedule's stochastic kernel).
    """

    name = "sir"
    needs_reward = True
    pools_samples = True
    batches_prompts = True

    def __init__(
        self,
        lam: float = 1.0,
        kernel: Optional[str | Kernel] = None,
        kernel_options: Optional[dict] = None,
        progress: Optional[bool] = None,
        batch_size: int = 512,
    ):
        super().__init__(progress=progress, batch_size=batch_size)
        self.lam = float(lam)
        self.kernel, self.kernel_options = kernel, dict(kernel_options or {})

    def _sample(self, model, reward, num_samples, nfe, steps, generator, cond):
        kernel = resolve_kernel(model, self.kernel, **self.kernel_options)
        rows, m = pooled_rollout_plan(model, cond, steps, nfe, self.name)
        x0 = batched_rollouts(model, m, model.schedule.time_grid(steps), kernel, rows, generator, self.batch_size,
                              self.show_progress())
        rewards = evaluate_reward(reward, model, x0, self.batch_size)
        chosen, ess, log_z = self._resample(rewards, num_samples, generator)
        return SampleOutput(x0[chosen.to(x0.device)], rewards[chosen.to(x0.device)], nfe=0,
                            info={"rollouts": m, "ess": ess, "log_z": log_z})

    def _sample_prompts(self, model, reward, groups, num_samples, nfe, steps):
        kernel = resolve_kernel(model, self.kernel, **self.kernel_options)
        per_rollout = steps * model.evals_for(groups.condition(0))
        if nfe is None or nfe < per_rollout:
            raise too_small_budget(self.name, nfe, per_rollout, f"one rollout of {steps} steps per prompt")
        m = nfe // per_rollout
        x0 = grouped_rollouts(model, groups, m, model.schedule.time_grid(steps), kernel, self.batch_size,
                              self.show_progress())
        rewards = evaluate_reward(reward, model, x0, self.batch_size, groups.row_prompts(m), groups.row_metadata(m))
        chosen, ess, log_z = [], [], []
        for g in range(len(groups)):  # each prompt resamples its own pool only
            rows, e, z = self._resample(rewards[g * m:(g + 1) * m], num_samples, groups.generators[g])
            chosen.append(rows + g * m)
            ess.append(e)
            log_z.append(z)
        chosen = torch.cat(chosen).to(x0.device)
        return SampleOutput(x0[chosen], rewards[chosen], nfe=0, info={"rollouts": m, "ess": ess, "log_z": log_z})

    def _resample(self, rewards: torch.Tensor, num_samples: int, generator) -> tuple[torch.Tensor, float, float]:
        """(indices of ``num_samples`` draws from the pool weighted by exp(lam r), ESS, log Z-hat)."""
        # NaN and +inf are broken rewards, not infinitely good ones: zero weight, as in SMC and DTS
        log_w = self.lam * torch.nan_to_num(rewards.double(), nan=-float("inf"), posinf=-float("inf"))
        chosen = multinomial_resample(log_w, num_samples, generator)
        # log of the unbiased estimate (1/M) sum exp(lam r) of Z = E_p[exp(lam r)]
        log_z = float(torch.logsumexp(log_w, 0)) - math.log(len(rewards))
        return chosen, effective_sample_size(log_w), log_z
