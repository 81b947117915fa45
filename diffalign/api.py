"""`da.sample`: the one-call entry point over the sampler registry."""

from __future__ import annotations

from typing import Any, Optional

from .models.denoiser import Denoiser
from .samplers import get as get_sampler
from .samplers.base import SampleOutput


def sample(
    model: Denoiser,
    reward: Any = None,
    sampler: str = "ancestral",
    num_samples: int = 1,
    nfe: Optional[int] = None,
    steps: int = 50,
    seed: int = 0,
    cond: Any = None,
    prompts: Optional[list[str]] = None,
    metadata: Optional[list] = None,
    **options: Any,
) -> SampleOutput:
    """``get(sampler, **options).sample(model, reward, num_samples, nfe, steps, seed, cond, prompts, metadata)``.

    With ``prompts=[...]``: ``num_samples`` samples per prompt, ordered prompt by prompt
    (``out.prompts`` lists each sample's prompt), and ``nfe`` is the budget **per prompt**.
    """
    return get_sampler(sampler, **options).sample(
        model, reward, num_samples=num_samples, nfe=nfe, steps=steps, seed=seed, cond=cond,
        prompts=prompts, metadata=metadata,
    )
