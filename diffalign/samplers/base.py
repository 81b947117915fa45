"""The uniform sampler interface (design.md §3) and the argument checks every sampler shares."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..errors import DiffalignError
from ..models.denoiser import Denoiser
from ..models.wrappers import NFECounter

RewardLike = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SampleOutput:
    """What every sampler returns.

    Attributes:
        samples: (num_samples, *shape) in model space (x0).
        rewards: (num_samples,) rewards of the samples (None when no reward was given).
        nfe: model evaluations actually spent -- all of them, never more than the budget.
        info: method-specific extras (e.g. best-of-n's candidates per sample).
    """

    samples: torch.Tensor
    rewards: Optional[torch.Tensor]
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)


class Sampler:
    """Base class: subclasses implement :meth:`_sample` on an NFE-counted model."""

    name: str = "sampler"
    needs_reward: bool = False

    def __init__(self, progress: Optional[bool] = None, batch_size: int = 512):
        self.progress = progress
        self.batch_size = check_positive_int("batch_size", batch_size)

    def sample(
        self,
        model: Denoiser,
        reward: Optional[RewardLike] = None,
        num_samples: int = 1,
        nfe: Optional[int] = None,
        steps: int = 50,
        seed: int = 0,
        cond: Any = None,
    ) -> SampleOutput:
        """Draw ``num_samples`` samples spending at most ``nfe`` model evaluations.

        Args:
            model: any :class:`Denoiser` (wrap it in :class:`CFGDenoiser` for guidance).
            reward: a reward name, a registered reward or any callable x0 -> (B,).
            nfe: the whole budget of model evaluations (None: whatever the method needs).
            steps: denoising steps of one rollout.
            seed: seeds the call's generator; same seed, same samples.
            cond: the model's conditioning (for the digits models an int label or LongTensor).
        """
        if not isinstance(model, Denoiser):
            raise DiffalignError(f"model must be a diffalign Denoiser (see da.load_model), got {type(model).__name__}")
        num_samples = check_positive_int("num_samples", num_samples)
        steps = check_positive_int("steps", steps)
        if nfe is not None:
            nfe = check_positive_int("nfe", nfe)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise DiffalignError(f"seed must be an integer, got {seed!r}")
        reward_fn = None
        if reward is not None:
            from ..rewards import as_reward

            reward_fn = as_reward(reward)
        elif self.needs_reward:
            raise DiffalignError(f"sampler {self.name!r} needs a reward")
        counter = NFECounter(model, budget=nfe)
        generator = torch.Generator(device=model.device).manual_seed(seed)
        with torch.no_grad():
            out = self._sample(counter, reward_fn, num_samples, nfe, steps, generator, cond)
        out.nfe = counter.count
        return out

    def _sample(self, model, reward, num_samples, nfe, steps, generator, cond) -> SampleOutput:
        raise NotImplementedError

    def show_progress(self) -> bool:
        return sys.stderr.isatty() if self.progress is None else bool(self.progress)


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DiffalignError(f"{name} must be a positive integer, got {value!r}")
    return value


def too_small_budget(sampler: str, nfe: int, needed: int, what: str) -> DiffalignError:
    return DiffalignError(f"nfe={nfe} is too small for {sampler}: {what} needs at least {needed} NFE")
