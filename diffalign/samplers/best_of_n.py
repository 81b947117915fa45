"""Best-of-N: draw N base samples per output and keep the one with the highest reward."""

from __future__ import annotations

from typing import Optional

import torch

from ..kernels import Kernel
from ..models.conditioning import index_condition
from .base import SampleOutput, Sampler, too_small_budget
from .registry import SAMPLERS
from .prompt_groups import grouped_rollouts
from .rollout import batched_rollouts, evaluate_reward, resolve_kernel


@SAMPLERS.register("best-of-n")
class BestOfNSampler(Sampler):
    """Best-of-N (rejection by argmax), the standard search baseline.

    With budget ``nfe``, each of the ``num_samples`` outputs gets N = nfe // (num_samples * steps *
    passes) candidate rollouts (or ``n`` if given, which must fit the budget). NaN and +inf rewards count
    as -inf, so a broken candidate is never chosen over a valid one.
    """

    name = "best-of-n"
    needs_reward = True
    batches_prompts = True

    def __init__(
        self,
        n: Optional[int] = None,
        kernel: Optional[str | Kernel] = None,
        kernel_options: Optional[dict] = None,
        progress: Optional[bool] = None,
        batch_size: int = 512,
    ):
        super().__init__(progress=progress, batch_size=batch_size)
        self.n = n
        self.kernel = kernel
        self.kernel_options = dict(kernel_options or {})

    def _sample(self, model, reward, num_samples, nfe, steps, generator, cond):
        kernel = resolve_kernel(model, self.kernel, **self.kernel_options)
        encoded = model.encode_condition(cond, num_samples)
        n = self._candidates(num_samples, nfe, steps * model.evals_for(encoded), steps)
        # candidate j of output i sits at row i * n + j
        owners = torch.arange(num_samples, device=model.device).repeat_interleave(n)
        candidates = batched_rollouts(
            model, num_samples * n, model.schedule.time_grid(steps), kernel,
            index_condition(encoded, owners), generator, self.batch_size, self.progress,
        )
        scores = evaluate_reward(reward, model, candidates, self.batch_size)
        best = _best_rows(scores, n)
        return SampleOutput(candidates[best], scores[best], nfe=0, info={"n": n, "candidate_rewards": scores.view(num_samples, n)})

    def _sample_prompts(self, model, reward, groups, num_samples, nfe, steps):
        kernel = resolve_kernel(model, self.kernel, **self.kernel_options)
        n = self._candidates(num_samples, nfe, steps * model.evals_for(groups.condition(0)), steps)
        # prompt g's candidate j of output i sits at row (g * num_samples + i) * n + j: the one-prompt layout, stacked
        count = num_samples * n
        candidates = grouped_rollouts(model, groups, count, model.schedule.time_grid(steps), kernel, self.batch_size,
                                      self.progress)
        scores = evaluate_reward(reward, model, candidates, self.batch_size, groups.row_prompts(count),
                                 groups.row_metadata(count))
        best = _best_rows(scores, n)
        return SampleOutput(candidates[best], scores[best], nfe=0,
                            info={"n": n, "candidate_rewards": scores.view(len(groups) * num_samples, n)})

    def _candidates(self, num_samples: int, nfe, per_rollout: int, steps: int) -> int:
        """N candidates per output: ``n`` if given, else what the (per-prompt) budget buys."""
        if self.n is not None:
            n = self.n
        elif nfe is not None:
            n = nfe // (num_samples * per_rollout)
        else:
            n = 1
        needed = num_samples * max(n, 1) * per_rollout
        if n < 1 or (nfe is not None and needed > nfe):
            raise too_small_budget(self.name, nfe, needed, f"{num_samples} samples x {max(n, 1)} candidates x {steps} steps")
        return n


def _best_rows(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Row of the best of each consecutive run of ``n`` candidates; NaN and +inf (broken rewards, as in SIR,
    SMC and DTS) never win over a valid score."""
    ranked = torch.nan_to_num(scores, nan=-float("inf"), posinf=-float("inf")).view(-1, n)
    return ranked.argmax(dim=1) + torch.arange(ranked.shape[0], device=ranked.device) * n
