"""Plain ancestral sampling: one rollout of the base stochastic kernel per sample."""

from __future__ import annotations

from typing import Optional

from ..kernels import Kernel
from ..models.conditioning import Condition
from .base import SampleOutput, Sampler, too_small_budget
from .registry import SAMPLERS
from .prompt_groups import grouped_rollouts
from .rollout import batched_rollouts, evaluate_reward, resolve_kernel


@SAMPLERS.register("ancestral")
class AncestralSampler(Sampler):
    """Base-model samples: DDPM/DDIM(eta) for VP models, the flow SDE (or Euler ODE) for flow models.

    Args:
        kernel: a :class:`~diffalign.kernels.Kernel` or a kernel name ("ddim", "ddpm", "euler",
            "flow-sde"); default: the schedule's stochastic kernel (DDPM for VP, flow SDE for flow).
        kernel_options: options of a named kernel, e.g. ``{"eta": 0.0}``.
        progress: progress bars: None (default) shows them for runs longer than a few seconds, False never.
        batch_size: rollouts per model call.
    """

    name = "ancestral"
    batches_prompts = True

    def __init__(
        self,
        kernel: Optional[str | Kernel] = None,
        kernel_options: Optional[dict] = None,
        progress: Optional[bool] = None,
        batch_size: int = 512,
    ):
        super().__init__(progress=progress, batch_size=batch_size)
        self.kernel = kernel
        self.kernel_options = dict(kernel_options or {})

    def _sample(self, model, reward, num_samples, nfe, steps, generator, cond):
        kernel = resolve_kernel(model, self.kernel, **self.kernel_options)
        encoded: Condition = model.encode_condition(cond, num_samples)
        needed = num_samples * steps * model.evals_for(encoded)
        if nfe is not None and needed > nfe:
            raise too_small_budget(self.name, nfe, needed, f"{num_samples} samples x {steps} steps")
        grid = model.schedule.time_grid(steps)
        x0 = batched_rollouts(model, num_samples, grid, kernel, encoded, generator, self.batch_size, self.progress)
        rewards = None if reward is None else evaluate_reward(reward, model, x0, self.batch_size)
        return SampleOutput(x0, rewards, nfe=0, info={"kernel": repr(kernel)})

    def _sample_prompts(self, model, reward, groups, num_samples, nfe, steps):
        kernel = resolve_kernel(model, self.kernel, **self.kernel_options)
        needed = num_samples * steps * model.evals_for(groups.condition(0))
        if nfe is not None and needed > nfe:
            raise too_small_budget(self.name, nfe, needed, f"{num_samples} samples x {steps} steps per prompt")
        grid = model.schedule.time_grid(steps)
        x0 = grouped_rollouts(model, groups, num_samples, grid, kernel, self.batch_size, self.progress)
        rewards = None if reward is None else evaluate_reward(
            reward, model, x0, self.batch_size, groups.row_prompts(num_samples), groups.row_metadata(num_samples))
        return SampleOutput(x0, rewards, nfe=0, info={"kernel": repr(kernel)})
