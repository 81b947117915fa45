"""Best-of-N: draw N base samples per output and keep the one with the highest reward."""

from __future__ import annotations

from typing import Optional

import torch

from ..kernels import Kernel
from ..models.conditioning import index_condition
from .base import SampleOutput, Sampler, too_small_budget
from .registry import SAMPLERS
from .rollout import batched_rollouts, evaluate_reward, resolve_kernel


@SAMPLERS.register("best-of-n")
class BestOfNSampler(Sampler):
    """Best-of-N (rejection by argmax), the standard search baseline.

    With budget ``nfe``, each of the ``num_samples`` outputs gets N = nfe // (num_samples * steps *
    passes) candidate rollouts (or ``n`` if given, which must fit the budget). NaN rewards count as
    -inf, so a broken candidate is never chosen over a valid one.
    """

    name = "best-of-n"
    needs_reward = True

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
        per_rollout = steps * model.evals_for(encoded)
        if self.n is not None:
            n = self.n
        elif nfe is not None:
            n = nfe // (num_samples * per_rollout)
        else:
            n = 1
        needed = num_samples * max(n, 1) * per_rollout
        if n < 1 or (nfe is not None and needed > nfe):
            raise too_small_budget(self.name, nfe, needed, f"{num_samples} samples x {max(n, 1)} candidates x {steps} steps")
        # candidate j of output i sits at row i * n + j
        owners = torch.arange(num_samples, device=model.device).repeat_interleave(n)
        candidates = batched_rollouts(
            model, num_samples * n, model.schedule.time_grid(steps), kernel,
            index_condition(encoded, owners), generator, self.batch_size, self.progress,
        )
        scores = evaluate_reward(reward, model, candidates, self.batch_size)
        ranked = torch.nan_to_num(scores, nan=-float("inf")).view(num_samples, n)
        best = ranked.argmax(dim=1) + torch.arange(num_samples, device=ranked.device) * n
        return SampleOutput(candidates[best], scores[best], nfe=0, info={"n": n, "candidate_rewards": scores.view(num_samples, n)})
