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
    steps: Optional[int] = None,
    seed: int = 0,
    cond: Any = None,
    prompts: Optional[list[str]] = None,
    metadata: Optional[list] = None,
    **options: Any,
) -> SampleOutput:
    """``get(sampler, **options).sample(model, reward, num_samples, nfe, steps, seed, cond, prompts, metadata)``.

    With ``prompts=[...]``: ``num_samples`` samples per prompt, ordered prompt by prompt
    (``out.prompts`` lists each sample's prompt), and ``nfe`` is the budget **per prompt**.
    ``steps=None``: the model's own default (``digits-fast``: 2; a wrapper asks the model it wraps), else 50.
    """
    if steps is None:
        steps = default_steps(model)
    return get_sampler(sampler, **options).sample(
        model, reward, num_samples=num_samples, nfe=nfe, steps=steps, seed=seed, cond=cond,
        prompts=prompts, metadata=metadata,
    )


def default_steps(model: Denoiser) -> int:
    """The denoising steps a model is meant to run with (its ``default_steps``, looked up through
    wrappers such as CFG and guidance), or 50."""
    while model is not None:
        steps = getattr(model, "default_steps", None)
        if steps is not None:
            return int(steps)
        model = getattr(model, "inner", None)
    return 50
