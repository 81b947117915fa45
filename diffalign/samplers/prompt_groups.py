"""Sampling over a prompt set: one *group* of rows per prompt, sharing model calls (design.md §3b).

A prompt-set call ``sampler.sample(model, reward, prompts=[...], num_samples=k, nfe=N)`` gives k
samples per prompt, ordered prompt by prompt, with ``nfe`` the budget **per prompt**. Rows of
different prompts share model calls; nothing else is shared: every resampling, weight, ESS and
search stays inside one prompt's group.

**Seeding rule.** Prompt i draws all its randomness from its own generator, seeded ``seed + i``, in
the order a one-prompt call would. Model calls are packed across prompts, but each prompt's noise is
drawn in the same chunks (``batch_size`` rows) as alone. So prompt i of a call with seed s returns
what ``prompts=[prompts[i]]`` with seed s + i returns -- exactly when the network's output for a row
does not depend on its batch mates (analytic oracles; a network up to floating-point rounding of
batched kernels). The command line's ``--seed + i`` per prompt is the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from ..errors import DiffalignError
from ..models.conditioning import Condition, cat_conditions, index_condition
from ..models.denoiser import Denoiser
from .progress import progress_bar

__all__ = ["PromptGroups", "check_prompt_list", "grouped_rollouts", "grouped_noise", "Unit", "plan_units"]


def check_prompt_list(prompts: Any, metadata: Any = None) -> tuple[list[str], Optional[list]]:
    """(prompts, metadata) as lists of equal length, with one clear error for anything else."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise DiffalignError(f"prompts must be a non-empty list of strings; got {prompts!r:.80}")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise DiffalignError(f"prompts[{i}] must be a non-empty string; got {prompt!r:.80}")
    if metadata is not None:
        if not isinstance(metadata, (list, tuple)) or len(metadata) != len(prompts):
            got = len(metadata) if isinstance(metadata, (list, tuple)) else type(metadata).__name__
            raise DiffalignError(f"metadata must be a list with one entry per prompt ({len(prompts)}); got {got}")
        metadata = list(metadata)
    return list(prompts), metadata


@dataclass
class PromptGroups:
    """The prompts of one call, their encoded conditions (one row each) and their generators."""

    prompts: list[str]
    metadata: Optional[list]
    conditions: Condition  # P rows, row i = prompt i
    generators: list[torch.Generator]

    @classmethod
    def build(cls, model: Denoiser, prompts: Sequence[str], metadata: Optional[Sequence], seed: int) -> "PromptGroups":
        encoded = [model.encode_condition(prompt, 1) for prompt in prompts]
        if any(c is None for c in encoded):
            raise DiffalignError(f"{type(model).__name__} ignores prompts (it is unconditional); sample it without prompts")
        try:
            conditions = cat_conditions(encoded)
        except RuntimeError as error:  # e.g. token sequences of different lengths
            raise DiffalignError(f"the prompts encode to conditions of different shapes ({error}); "
                                 "pad the text encoder's output to a fixed length") from None
        generators = [torch.Generator(device=model.device).manual_seed(seed + i) for i in range(len(prompts))]
        return cls(list(prompts), None if metadata is None else list(metadata), conditions, generators)

    def __len__(self) -> int:
        return len(self.prompts)

    def condition(self, group: int) -> Condition:
        return index_condition(self.conditions, slice(group, group + 1))

    def rows(self, count: int) -> Condition:
        """The condition of ``count`` rows per prompt, prompt by prompt."""
        owners = torch.arange(len(self), device=self._device()).repeat_interleave(count)
        return index_condition(self.conditions, owners)

    def row_prompts(self, count: int) -> list[str]:
        return [p for p in self.prompts for _ in range(count)]

    def row_metadata(self, count: int) -> Optional[list]:
        return None if self.metadata is None else [m for m in self.metadata for _ in range(count)]

    def _device(self) -> torch.device:
        return next(iter(self.conditions.values())).device


@dataclass(frozen=True)
class Unit:
    """``size`` consecutive rows of one prompt's group, drawn together as a one-prompt call would."""

    group: int
    start: int  # row offset in the whole batch
    size: int


def plan_units(counts: Sequence[int], batch_size: int) -> list[list[Unit]]:
    """Model calls of at most ``batch_size`` rows: each group is cut into ``batch_size`` chunks (as it
    would be alone), and consecutive chunks of different groups are packed into one call. Two chunks of
    one group never share a call (a group with a second chunk has a full first one), so each group's
    generator is consumed in its one-prompt order."""
    calls, current, filled, offset = [], [], 0, 0
    for group, count in enumerate(counts):
        for start in range(0, count, batch_size):
            size = min(batch_size, count - start)
            if current and filled + size > batch_size:
                calls.append(current)
                current, filled = [], 0
            current.append(Unit(group, offset + start, size))
            filled += size
        offset += count
    if current:
        calls.append(current)
    return calls


def grouped_noise(model_shape: tuple, units: Sequence[Unit], generators: Sequence[torch.Generator], device, dtype) -> torch.Tensor:
    """Standard normal rows for ``units``, each drawn from its own group's generator."""
    return torch.cat([torch.randn((u.size, *model_shape), generator=generators[u.group], device=device, dtype=dtype)
                      for u in units])


def grouped_rollouts(
    model: Denoiser,
    groups: PromptGroups,
    count: int,
    grid: torch.Tensor,
    kernel,
    batch_size: int,
    progress: Optional[bool] = False,
) -> torch.Tensor:
    """``count`` independent rollouts per prompt from fresh noise, prompt by prompt, in shared calls."""
    calls = plan_units([count] * len(groups), batch_size)
    rows = groups.rows(count)
    out = torch.empty((count * len(groups), *model.shape), device=model.device, dtype=model.dtype)
    for units in progress_bar(calls, progress=False if len(calls) == 1 else progress, desc="rollouts"):
        index = torch.cat([torch.arange(u.start, u.start + u.size, device=model.device) for u in units])
        cond = index_condition(rows, index)
        x = grouped_noise(model.shape, units, groups.generators, model.device, model.dtype)
        steps = range(len(grid) - 1)
        for i in progress_bar(steps, progress=progress if len(calls) == 1 else False, desc="denoise", leave=False):
            pred = model.predict(x, grid[i], cond)
            noise = grouped_noise(model.shape, units, groups.generators, x.device, x.dtype) if kernel.stochastic else None
            x = kernel.step(pred, grid[i + 1], noise)
        out[index] = x
    return out
