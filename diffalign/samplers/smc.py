"""SMC with Feynman-Kac steering (Singhal et al. 2025, "A General Framework for Inference-time Scaling
and Steering of Diffusion Models"), resampling at the same times DTS branches.

K = nfe // (steps x passes) particles follow the base kernel. At each resampling step the particles
are weighted by a potential built from the reward of their current denoised estimate
r_t = r(x0_hat(x_t)):

* ``"diff"``: G_t = exp(lambda (r_t - r_prev)). The product over time telescopes to exp(lambda r(x0)),
  so with the final weighting the particles target p(x0) exp(lambda r(x0)) exactly as K -> inf;
* ``"max"``: G_t = exp(lambda (max_{s<=t} r_s - max_{s<t} r_s)) -- FK-steering's "max" potential, which
  favours particles that were ever good (the first evaluation, at whatever step, gives
  exp(lambda r_t)); it is a heuristic, not exact.

Resampling (systematic) happens when the effective sample size falls below ``ess_threshold * K``;
the output resamples ``num_samples`` particles by their final weights.
"""

from __future__ import annotations

from typing import Optional

import torch
from tqdm.auto import tqdm

from ..errors import DiffalignError, choice_error
from ..kernels import Kernel
from ..models.conditioning import index_condition
from .base import SampleOutput, Sampler, check_positive_int, too_small_budget
from .prompt_groups import grouped_noise, plan_units
from .registry import SAMPLERS
from .rollout import evaluate_reward, initial_noise, pooled_rollout_plan, resolve_kernel
from .weights import effective_sample_size, multinomial_resample, systematic_resample

POTENTIALS = ("diff", "max")


@SAMPLERS.register("smc")
class SMCSampler(Sampler):
    """FK-steering SMC.

    Args:
        lam: inverse temperature of the target.
        potential: "diff" (exact in the limit) or "max" (FK-steering's heuristic).
        resample_every: steps between potential evaluations (DTS's ``branch_every``; paper: 10 of 50).
        ess_threshold: resample when ESS < ess_threshold * K (1.0: always).
        kernel, kernel_options: the base kernel (default: the schedule's stochastic kernel).
        batch_size: particles per model call.
    """

    name = "smc"
    needs_reward = True
    pools_samples = True
    batches_prompts = True

    def __init__(
        self,
        lam: float = 1.0,
        potential: str = "diff",
        resample_every: int = 10,
        ess_threshold: float = 0.5,
        kernel: Optional[str | Kernel] = None,
        kernel_options: Optional[dict] = None,
        progress: Optional[bool] = None,
        batch_size: int = 512,
    ):
        super().__init__(progress=progress, batch_size=batch_size)
        if potential not in POTENTIALS:
            raise choice_error("potential", potential, list(POTENTIALS))
        if not 0.0 <= ess_threshold <= 1.0:
            raise DiffalignError(f"ess_threshold must lie in [0, 1], got {ess_threshold!r}")
        self.lam = float(lam)
        self.potential = potential
        self.resample_every = check_positive_int("resample_every", resample_every)
        self.ess_threshold = float(ess_threshold)
        self.kernel, self.kernel_options = kernel, dict(kernel_options or {})

    def _sample(self, model, reward, num_samples, nfe, steps, generator, cond):
        rows, k = pooled_rollout_plan(model, cond, steps, nfe, self.name)
        out = self._run(model, reward, rows, k, [generator], num_samples, steps, None, None)
        out.info = {key: value[0] if isinstance(value, list) else value for key, value in out.info.items()}
        return out

    def _sample_prompts(self, model, reward, groups, num_samples, nfe, steps):
        per_rollout = steps * model.evals_for(groups.condition(0))
        if nfe is None or nfe < per_rollout:
            raise too_small_budget(self.name, nfe, per_rollout, f"one rollout of {steps} steps per prompt")
        k = nfe // per_rollout
        return self._run(model, reward, groups.rows(k), k, groups.generators, num_samples, steps,
                         groups.row_prompts(k), groups.row_metadata(k))

    def _run(self, model, reward, rows, k, generators, num_samples, steps, prompts, metadata) -> SampleOutput:
        """K particles for each of G groups (one per prompt; G = 1 without a prompt set), rows group by
        group. Model calls take ``batch_size`` rows across groups; noise, weights, ESS and resampling are
        per group, each from its own generator in its one-group order."""
        kernel = resolve_kernel(model, self.kernel, **self.kernel_options)
        groups = len(generators)
        grid = model.schedule.time_grid(steps)
        x = torch.cat([initial_noise(model, k, g) for g in generators])
        log_w = torch.zeros(groups, k, dtype=torch.float64, device=x.device)
        # r_prev ("diff") or running max ("max"); -inf: no reward seen yet, so any first reward is the max
        previous = torch.full((groups, k), -float("inf"), dtype=torch.float64, device=x.device)
        units = plan_units([k] * groups, self.batch_size)
        first_evaluation = True
        resamples = [0] * groups
        for i in tqdm(range(steps), desc=self.name, disable=not self.show_progress()):
            preds, x_next = [], torch.empty_like(x)
            noise = None
            if kernel.stochastic:  # each group's noise in its one-group chunks, whatever the packing
                noise = grouped_noise(model.shape, [u for call in units for u in call], generators, x.device, x.dtype)
            for chunk in torch.arange(groups * k, device=x.device).split(self.batch_size):
                pred = model.predict(x[chunk], grid[i], index_condition(rows, chunk))
                x_next[chunk] = kernel.step(pred, grid[i + 1], None if noise is None else noise[chunk])
                preds.append(pred.x0)
            last = i + 1 == steps
            if (i + 1) % self.resample_every == 0 or last:
                # potential of the state at the *start* of the step, through its denoised estimate;
                # at the last step the estimate is x0 itself, which completes the telescoping product
                estimate = x_next if last else torch.cat(preds)
                r_t = evaluate_reward(reward, model, estimate, self.batch_size, prompts, metadata).double()
                r_t = torch.nan_to_num(r_t, nan=-float("inf"), posinf=-float("inf")).view(groups, k)
                current = r_t if self.potential == "diff" else torch.maximum(previous, r_t)
                # the first potential has no predecessor: G = exp(lambda r_t), whatever step it falls on
                log_w = log_w + self.lam * (current if first_evaluation else current - previous)
                first_evaluation = False
                log_w = torch.nan_to_num(log_w, nan=-float("inf"))
                previous = current
                if not last:
                    x_next = x_next.view(groups, k, *x.shape[1:])
                    for g in range(groups):  # resampling never crosses prompts
                        if effective_sample_size(log_w[g]) < self.ess_threshold * k:
                            idx = systematic_resample(log_w[g], k, generators[g]).to(x.device)
                            x_next[g], previous[g] = x_next[g][idx], previous[g][idx]
                            log_w[g] = 0.0
                            resamples[g] += 1
                    x_next = x_next.view(groups * k, *x.shape[1:])
            x = x_next
        if self.potential == "diff":
            final_r = previous
        else:
            final_r = evaluate_reward(reward, model, x, self.batch_size, prompts, metadata).double().view(groups, k)
        chosen = torch.cat([multinomial_resample(log_w[g], num_samples, generators[g]).to(x.device) + g * k
                            for g in range(groups)])
        return SampleOutput(x[chosen], final_r.reshape(-1)[chosen].float(), nfe=0,
                            info={"particles": k, "resamples": resamples,
                                  "ess": [effective_sample_size(log_w[g]) for g in range(groups)]})
