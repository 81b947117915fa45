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
from .rollout import batched_rollouts, evaluate_reward, pooled_rollout_plan, resolve_kernel
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
        # NaN and +inf are broken rewards, not infinitely good ones: zero weight, as in SMC and DTS
        log_w = self.lam * torch.nan_to_num(rewards.double(), nan=-float("inf"), posinf=-float("inf"))
        chosen = multinomial_resample(log_w, num_samples, generator).to(x0.device)
        # log of the unbiased estimate (1/M) sum exp(lam r) of Z = E_p[exp(lam r)]
        log_z = float(torch.logsumexp(log_w, 0)) - math.log(m)
        return SampleOutput(x0[chosen], rewards[chosen], nfe=0,
                            info={"rollouts": m, "ess": effective_sample_size(log_w), "log_z": log_z})
