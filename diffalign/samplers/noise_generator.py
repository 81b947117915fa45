"""The deterministic generator x0 = g(z) that ReNO and HyperNoise optimise the noise of.

g runs a deterministic kernel (the Euler ODE step by default) over the schedule's ``steps``-step grid
from t = 1 to 0 -- a few-step model such as ``digits-fast`` at 1-4 steps. It is differentiable in z
when gradients are on.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import DiffalignError
from ..kernels import Kernel
from ..models.conditioning import Condition
from ..models.denoiser import Denoiser
from .rollout import resolve_kernel, rollout


def deterministic_kernel(model: Denoiser, kernel: Optional[str | Kernel], sampler: str, **options) -> Kernel:
    """The kernel of g; a stochastic one is refused (g must be a function of z alone)."""
    resolved = resolve_kernel(model, kernel, **options)
    if resolved.stochastic:
        raise DiffalignError(f"{sampler} needs a deterministic kernel (g must be a function of the noise), got {resolved!r}; use kernel='euler'")
    return resolved


def generate(model: Denoiser, z: torch.Tensor, cond: Condition, steps: int, kernel: Kernel) -> torch.Tensor:
    """x0 = g(z): ``steps`` kernel steps from t = 1 (z) to t = 0."""
    return rollout(model, z, model.schedule.time_grid(steps), kernel, cond, generator=None)


def generator_passes(model: Denoiser, cond: Condition, steps: int) -> int:
    """Forward passes of one g(z) per sample."""
    return steps * model.evals_for(cond)


def differentiable_reward(reward, sampler: str):
    """The reward as a callable, refusing one that declares itself non-differentiable (same rule as
    :class:`~diffalign.RewardGuidance`)."""
    from ..guidance.reward_guidance import declared_non_differentiable
    from ..rewards import as_reward

    reward = as_reward(reward)
    bad = declared_non_differentiable(reward)
    if bad:
        raise DiffalignError(
            f"{sampler} needs a differentiable reward, but {', '.join(map(repr, bad))} is not (e.g. JPEG "
            "compressibility); use a sampler that needs only reward values (best-of-n, sir, smc, dts)"
        )
    return reward


def check_reward_gradient(values: torch.Tensor, reward, sampler: str) -> None:
    """A reward that does not declare itself non-differentiable must still return values with a gradient."""
    if not (torch.is_tensor(values) and values.requires_grad):
        name = getattr(reward, "name", None) or type(reward).__name__
        raise DiffalignError(
            f"{sampler}: reward {name!r} returned values with no gradient with respect to its input (it is not "
            "differentiable, or detaches); use a differentiable reward or a sampler that needs only values"
        )
