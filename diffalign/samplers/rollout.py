"""The sampling loop as a small function of (model, x, time grid, kernel) -- k-diffusion style."""

from __future__ import annotations

from typing import Optional

import torch
from ..errors import DiffalignError
from ..kernels import Kernel, get_kernel
from ..models.conditioning import Condition, condition_batch_size, index_condition
from ..models.denoiser import Denoiser
from .base import too_small_budget
from .progress import progress_bar


def resolve_kernel(model: Denoiser, kernel: Optional[str | Kernel], **options) -> Kernel:
    """A Kernel instance, a registered kernel name, or None for the schedule's default."""
    if isinstance(kernel, Kernel):
        return kernel
    return get_kernel(kernel or model.schedule.default_kernel_name(), **options)


def initial_noise(model: Denoiser, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn((n, *model.shape), generator=generator, device=model.device, dtype=model.dtype)


def rollout(
    model: Denoiser,
    x: torch.Tensor,
    grid: torch.Tensor,
    kernel: Kernel,
    cond: Condition,
    generator: torch.Generator,
    progress: Optional[bool] = False,
) -> torch.Tensor:
    """Run ``kernel`` from grid[0] down to grid[-1]; returns the final sample (x0 when grid ends at 0)."""
    steps = range(len(grid) - 1)
    for i in progress_bar(steps, progress=progress, desc="denoise", leave=False):
        pred = model.predict(x, grid[i], cond)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if kernel.stochastic else None
        x = kernel.step(pred, grid[i + 1], noise)
    return x


def batched_rollouts(
    model: Denoiser,
    n: int,
    grid: torch.Tensor,
    kernel: Kernel,
    cond: Condition,
    generator: torch.Generator,
    batch_size: int,
    progress: Optional[bool] = False,
) -> torch.Tensor:
    """``n`` independent rollouts from fresh noise, ``batch_size`` at a time (``cond`` has n rows)."""
    chunks = []
    starts = range(0, n, batch_size)
    single = len(starts) == 1  # one chunk: show its steps instead of a one-item bar
    for start in progress_bar(starts, progress=False if single else progress, desc="rollouts"):
        stop = min(n, start + batch_size)
        x = initial_noise(model, stop - start, generator)
        chunk_cond = index_condition(cond, slice(start, stop))
        chunks.append(rollout(model, x, grid, kernel, chunk_cond, generator, progress if single else False))
    return torch.cat(chunks)


def evaluate_reward(reward, model: Denoiser, x0: torch.Tensor, batch_size: int,
                    prompts: Optional[list] = None, metadata: Optional[list] = None) -> torch.Tensor:
    """Rewards of model-space samples (decoded first), in batches, as float32 on x0's device.

    ``prompts`` / ``metadata``: one per row of ``x0`` (a prompt set's rows), passed on chunk by chunk.
    """
    values = []
    for start in range(0, x0.shape[0], batch_size):
        chunk = x0[start:start + batch_size]
        if prompts is None:
            scores = reward(model.decode(chunk))
        else:
            rows = slice(start, start + chunk.shape[0])
            scores = reward(model.decode(chunk), prompts=prompts[rows],
                            metadata=None if metadata is None else metadata[rows])
        values.append(scores.reshape(-1).float())
    return torch.cat(values).to(x0.device)


def single_condition(model, cond, name: str) -> Condition:
    """Samplers that pool all samples (a tree, a particle system) serve one condition: reduce a tensor
    of identical labels to one label, refuse mixed labels."""
    if torch.is_tensor(cond) and cond.ndim == 1:
        if len(cond.unique()) != 1:
            raise DiffalignError(f"{name} serves one condition per call; got several labels {cond.unique().tolist()}")
        cond = cond[0]
    encoded = model.encode_condition(cond, 1)
    if encoded and condition_batch_size(encoded) > 1:  # one row per sample of the same condition
        first = index_condition(encoded, slice(0, 1))
        if any(not torch.equal(value, first[key].expand_as(value)) for key, value in encoded.items()):
            raise DiffalignError(f"{name} serves one condition per call; got a condition with "
                                 f"{condition_batch_size(encoded)} different rows")
        encoded = first
    return encoded


def pooled_rollout_plan(model, cond, steps: int, nfe, name: str) -> tuple[Condition, int]:
    """For samplers that pool rollouts under one condition (SIR's pool, SMC's particles): how many
    rollouts the budget buys, nfe // (steps x passes), and the encoded condition repeated for each."""
    encoded = single_condition(model, cond, name)
    per_rollout = steps * model.evals_for(encoded)
    if nfe is None or nfe < per_rollout:
        raise too_small_budget(name, nfe, per_rollout, f"one rollout of {steps} steps")
    count = nfe // per_rollout
    return index_condition(encoded, torch.zeros(count, dtype=torch.long, device=model.device)), count
