"""The uniform sampler interface (design.md §3) and the argument checks every sampler shares."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..errors import DiffalignError, SamplingWarning
from ..models.denoiser import Denoiser
from ..models.wrappers import NFECounter

RewardLike = Callable[[torch.Tensor], torch.Tensor]

# With progress=None a bar appears only once a run has lasted this long, so short calls stay quiet.
PROGRESS_DELAY_S = 3.0
# A pooled output with fewer distinct samples (or a lower ESS) than this fraction of num_samples
# is mostly copies: warn.
MIN_DIVERSITY_FRACTION = 0.5
# Spending less than this fraction of an explicit nfe budget deserves a warning.
MIN_BUDGET_FRACTION = 0.5


@dataclass
class SampleOutput:
    """What every sampler returns.

    Attributes:
        samples: (num_samples, *shape) in model space (x0).
        rewards: (num_samples,) rewards of the samples (None when no reward was given).
        nfe: model evaluations actually spent -- all of them, never more than the budget.
        info: plain Python values (or tensors) about the run. Every sampler records ``seconds`` (wall
            time of the call). Samplers that pool samples (sir, smc, dts, dts-star) add ``distinct``
            (distinct rows in ``samples``) and ``ess`` (effective sample size of the weights they
            resampled from; None for dts-star, a search). Per sampler: ancestral ``kernel``;
            best-of-n ``n``, ``candidate_rewards``; sir ``rollouts``; smc ``particles``,
            ``resamples``; dts/dts-star ``nodes``, ``terminals``, ``state_bytes``,
            ``bytes_per_node``, ``iterations``, ``tree_nfe``, ``memory_full``,
            ``nonfinite_rewards``, ``nodes_chosen``.
    """

    samples: torch.Tensor
    rewards: Optional[torch.Tensor]
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        parts = [f"samples={tuple(self.samples.shape)}", f"nfe={self.nfe}"]
        if self.rewards is not None and self.rewards.numel():
            r = self.rewards.double()
            parts.append(f"reward mean={r.mean().item():.4g} min={r.min().item():.4g} max={r.max().item():.4g}")
        if "distinct" in self.info:
            parts.append(f"distinct={self.info['distinct']}")
        if "seconds" in self.info:
            parts.append(f"seconds={self.info['seconds']:.2f}")
        return f"SampleOutput({', '.join(parts)})"


class Sampler:
    """Base class: subclasses implement :meth:`_sample` on an NFE-counted model."""

    name: str = "sampler"
    needs_reward: bool = False
    #: resamples its outputs from a pool (particles, rollouts, a tree), so outputs can be copies
    pools_samples: bool = False

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
        start = time.perf_counter()
        with torch.no_grad():
            out = self._sample(counter, reward_fn, num_samples, nfe, steps, generator, cond)
        out.nfe = counter.count
        out.info["seconds"] = time.perf_counter() - start
        if self.pools_samples:
            out.info["distinct"] = count_distinct(out.samples)
            self._warn_if_few_distinct(out, num_samples)
        if nfe is not None and out.nfe < MIN_BUDGET_FRACTION * nfe:
            warnings.warn(
                f"{self.name} spent {out.nfe} of the nfe={nfe} budget ({out.nfe / nfe:.1%}); "
                + ("it draws one rollout per sample, so a larger budget buys nothing (a search sampler such as "
                   "best-of-n, sir, smc or dts spends it)" if self.name == "ancestral"
                   else "see out.info for why it stopped"),
                SamplingWarning, stacklevel=2,
            )
        return out

    def _warn_if_few_distinct(self, out: SampleOutput, num_samples: int) -> None:
        distinct, ess = out.info["distinct"], out.info.get("ess")
        floor = MIN_DIVERSITY_FRACTION * num_samples
        if num_samples > 1 and (distinct < floor or (ess is not None and ess < floor)):
            ess_text = f", ESS {ess:.1f}" if ess is not None else ""
            warnings.warn(
                f"{self.name}: only {distinct} distinct sample(s) among {num_samples}{ess_text}; the outputs are "
                "mostly copies -- raise nfe (or lower lam)",
                SamplingWarning, stacklevel=3,
            )

    def _sample(self, model, reward, num_samples, nfe, steps, generator, cond) -> SampleOutput:
        raise NotImplementedError

    def show_progress(self) -> bool:
        """Bars are on unless ``progress=False`` (tqdm.auto: a widget in Jupyter, text elsewhere)."""
        return self.progress is not False

    def progress_bar(self, iterable=None, **kwargs):
        """A tqdm bar that honours ``progress``: None shows it only for runs longer than a few seconds."""
        return progress_bar(iterable, progress=self.progress, **kwargs)


def progress_bar(iterable=None, progress: Optional[bool] = None, **kwargs):
    from tqdm.auto import tqdm

    delay = PROGRESS_DELAY_S if progress is None else 0.0
    # pop first: `progress is False or kwargs.pop(...)` would short-circuit and leave "disable" in kwargs
    disable = kwargs.pop("disable", False)
    return tqdm(iterable, disable=progress is False or disable, delay=delay, **kwargs)


def count_distinct(samples: torch.Tensor) -> int:
    return int(torch.unique(samples.reshape(len(samples), -1), dim=0).shape[0])


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DiffalignError(f"{name} must be a positive integer, got {value!r}")
    return value


def too_small_budget(sampler: str, nfe: int, needed: int, what: str) -> DiffalignError:
    return DiffalignError(f"nfe={nfe} is too small for {sampler}: {what} needs at least {needed} NFE")
