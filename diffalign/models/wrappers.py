"""Denoiser wrappers: guidance is composition (design.md §4).

Every wrapper is itself a :class:`Denoiser`, so any sampler gets classifier-free guidance, NFE
accounting, RLG (:mod:`.rlg`) and reward guidance (:mod:`diffalign.guidance`) without knowing about them.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import DiffalignError
from .conditioning import Condition, broadcast_condition, cat_conditions, condition_batch_size, describe_condition
from .denoiser import Denoiser, _time_batch
from .prediction import Prediction, combine


class DenoiserWrapper(Denoiser):
    """Delegates everything to ``inner``; subclasses change :meth:`predict`."""

    def __init__(self, inner: Denoiser):
        super().__init__(inner.schedule, inner.prediction, inner.shape)
        self.inner = inner

    def evals_for(self, cond: Condition, t: Optional[torch.Tensor] = None) -> int:
        return self.inner.evals_for(cond, t)

    def forward(self, x, t, cond=None):
        return self.predict(x, t, cond).as_kind(self.prediction)

    def predict(self, x, t, cond: Condition = None) -> Prediction:
        return self.inner.predict(x, t, cond)

    def encode_condition(self, cond, batch_size):
        return self.inner.encode_condition(cond, batch_size)

    def null_condition(self, batch_size):
        return self.inner.null_condition(batch_size)

    def decode(self, x0):
        return self.inner.decode(x0)

    @property
    def data_range(self):
        return self.inner.data_range

    def sample_warnings(self, samples):
        return self.inner.sample_warnings(samples)


class CFGDenoiser(DenoiserWrapper):
    """Classifier-free guidance (Ho & Salimans 2022): eps = eps_null + s (eps_cond - eps_null).

    The conditional and null passes run as one doubled batch. With ``scale == 1`` or no conditioning
    only the conditional pass runs, so a call costs 1 NFE per sample; otherwise it costs 2.

    Args:
        inner: the denoiser to guide.
        scale: the guidance scale s.
        null_cond: the condition of the null branch -- a negative prompt, an encoded dict (batch 1 or
            the batch of each call), or anything ``inner.encode_condition`` accepts. None: the
            model's own null condition (the empty prompt, the null class embedding).
    """

    def __init__(self, inner: Denoiser, scale: float, null_cond=None):
        super().__init__(inner)
        if not (isinstance(scale, (int, float)) and scale == scale):
            raise DiffalignError(f"guidance scale must be a number, got {scale!r}")
        self.scale = float(scale)
        self.null_cond = None if null_cond is None else inner.encode_condition(null_cond, 1)

    def evals_for(self, cond: Condition, t: Optional[torch.Tensor] = None) -> int:
        return self.inner.evals_for(cond, t) * (1 if self._single_pass(cond) else 2)

    def _single_pass(self, cond: Condition) -> bool:
        return self.scale == 1.0 or cond is None

    def null_condition(self, batch_size: int) -> Condition:
        if self.null_cond is not None:
            return broadcast_condition(self.null_cond, batch_size)
        null = self.inner.null_condition(batch_size)
        if null is None:
            raise DiffalignError(
                f"{type(self.inner).__name__} has no null condition for guidance scale {self.scale:g}: pass "
                "CFGDenoiser(model, scale, null_cond=...) with a negative/empty-prompt condition of the same keys as cond"
            )
        return null

    def predict(self, x, t, cond: Condition = None) -> Prediction:
        if self._single_pass(cond):
            return self.inner.predict(x, t, cond)
        batch = x.shape[0]
        t = _time_batch(t, x)
        cond = broadcast_condition(cond, batch)
        null = self.null_condition(batch)
        if condition_batch_size(null) not in (None, batch) or set(null) != set(cond):
            raise DiffalignError(
                f"CFG null condition {describe_condition(null)} does not match cond {describe_condition(cond)}"
            )
        both = self.inner.predict(torch.cat([x, x]), torch.cat([t, t]), cat_conditions([cond, null]))
        a, s = both.alpha[:batch], both.sigma[:batch]
        cond_pred = Prediction(x, t, both.x0[:batch], both.eps[:batch], both.schedule, a, s)
        null_pred = Prediction(x, t, both.x0[batch:], both.eps[batch:], both.schedule, a, s)
        return combine([null_pred, cond_pred], [1.0 - self.scale, self.scale])


class BudgetExceeded(DiffalignError):
    """A model call would spend more NFE than the budget allows."""


class NFECounter(DenoiserWrapper):
    """Counts model evaluations (batch size x passes per sample) and enforces an optional budget.

    The budget check happens *before* the call, so ``count`` can never exceed ``budget``: samplers plan
    their spending, and this is the safety net that makes ``out.nfe <= nfe`` a guarantee.
    """

    def __init__(self, inner: Denoiser, budget: Optional[int] = None):
        super().__init__(inner)
        self.budget = budget
        self.count = 0

    def cost(self, batch_size: int, cond: Condition = None, t: Optional[torch.Tensor] = None) -> int:
        return batch_size * self.inner.evals_for(cond, t)

    def predict(self, x, t, cond: Condition = None) -> Prediction:
        self._charge(x, t, cond)
        return self.inner.predict(x, t, cond)

    def denoise_step(self, x, t, cond, kernel, t_next, noise) -> torch.Tensor:
        # counting does not change the prediction, so the inner model's step (a forest's shared step) is used
        self._charge(x, t, cond)
        return self.inner.denoise_step(x, t, cond, kernel, t_next, noise)

    def _charge(self, x, t, cond: Condition) -> None:
        """Count one call on ``x``, or refuse it if it would exceed the budget."""
        cost = self.cost(x.shape[0], cond, t)
        if self.budget is not None and self.count + cost > self.budget:
            raise BudgetExceeded(f"model call of {cost} NFE would exceed the budget ({self.count}/{self.budget} spent)")
        if cond is not None and condition_batch_size(cond) not in (None, 1, x.shape[0]):
            raise DiffalignError(f"conditioning has batch {condition_batch_size(cond)} but x has {x.shape[0]}")
        self.count += cost
