"""The ``weighted-sum`` reward: ``sum_k w_k * r_k(x)`` over several rewards.

Linear scalarisation of several objectives, the usual way to combine rewards in diffusion
alignment (e.g. aesthetic + CLIP/HPS mixtures in DRaFT, Clark et al. 2023, arXiv:2309.17400;
rewarded soups, Ramé et al. 2023, arXiv:2306.04488, interpolate such trade-offs). The sum is
differentiable iff every term is, and each term receives the images' prompts and metadata.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import nn

from ..errors import DiffalignError
from .base import Reward, as_reward
from .registry import REWARDS

__all__ = ["WeightedSum"]


@REWARDS.register("weighted-sum")
class WeightedSum(Reward):
    """``sum_k weights[k] * rewards[k](images)``.

    Options: ``rewards`` (a list of :class:`Reward` instances, callables ``images -> (B,)`` or
    reward names, each passed through :func:`as_reward`) and ``weights`` (a list of numbers of
    the same length; default all 1).
    """

    name = "weighted-sum"

    def __init__(self, *, rewards: Sequence[object], weights: Sequence[float] | None = None):
        super().__init__()
        if isinstance(rewards, (str, bytes)) or not isinstance(rewards, Sequence) or len(rewards) == 0:
            raise DiffalignError(f"weighted-sum needs a non-empty list of rewards; got {rewards!r}")
        terms = [as_reward(r) for r in rewards]
        if weights is None:
            weights = [1.0] * len(terms)
        if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
            raise DiffalignError(f"weighted-sum weights must be a list of numbers; got {weights!r}")
        if len(weights) != len(terms):
            raise DiffalignError(
                f"weighted-sum got {len(terms)} rewards but {len(weights)} weights; give one weight per reward"
            )
        for w in weights:
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
                raise DiffalignError(f"weighted-sum weights must be finite numbers; got {w!r} in {list(weights)!r}")
        self.terms = nn.ModuleList(terms)
        self.weights = [float(w) for w in weights]
        self.differentiable = all(t.differentiable for t in terms)
        self.needs_prompts = any(t.needs_prompts for t in terms)

    def default_prompts(self, batch_size: int):
        # a prompt-free call goes through to the terms: each prompt-reading term uses its own default
        # prompt, or raises the error that names it
        return []

    def forward(self, images: torch.Tensor, prompts=None, metadata=None) -> torch.Tensor:
        prompts = prompts or None  # [] from default_prompts: each term falls back to its own default
        total = None
        for weight, term in zip(self.weights, self.terms):
            part = weight * term(images, prompts=prompts, metadata=metadata).to(device=images.device, dtype=torch.float32)
            total = part if total is None else total + part
        return total

    def extra_repr(self) -> str:
        return f"weights={self.weights}"
