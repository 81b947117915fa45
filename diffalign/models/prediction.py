"""`Prediction`: one network output, seen as x0, eps, v or flow velocity.

A network predicts one of four quantities at (x_t, t); given x_t and the schedule, each one determines
the others because x_t = alpha x0 + sigma eps is one linear equation in (x0, eps):

* ``"x0"``   -- the clean sample;
* ``"eps"``  -- the noise (DDPM, Ho et al. 2020);
* ``"v"``    -- v = alpha eps - sigma x0 (Salimans & Ho 2022, "v-prediction");
* ``"flow"`` -- the velocity dx_t/dt = alpha'(t) x0 + sigma'(t) eps; for the rectified-flow schedule
  this is eps - x0 (Liu et al. 2022; SD3).

The pair (x0, eps) is stored; everything else is derived, so kernels and guidance wrappers can ask for
whatever form they need without knowing what the network was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..errors import DiffalignError, choice_error
from ..schedules import Schedule, _broadcast

PREDICTION_KINDS = ("x0", "eps", "v", "flow")


def check_prediction_kind(kind: str) -> str:
    if kind not in PREDICTION_KINDS:
        raise choice_error("prediction", kind, list(PREDICTION_KINDS))
    return kind


@dataclass(frozen=True)
class Prediction:
    """Denoiser output at (x, t): the implied clean sample ``x0`` and noise ``eps``.

    ``t`` is a (B,) tensor of times. Derived forms (``v``, ``flow``) use the same schedule.
    """

    x: torch.Tensor
    t: torch.Tensor
    x0: torch.Tensor
    eps: torch.Tensor
    schedule: Schedule
    # alpha(t), sigma(t) broadcast against x; computed once here so kernels need not re-evaluate them
    alpha: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)
    sigma: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.alpha is None:
            object.__setattr__(self, "alpha", _coefs(self.schedule.alpha, self.x, self.t))
        if self.sigma is None:
            object.__setattr__(self, "sigma", _coefs(self.schedule.sigma, self.x, self.t))

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_output(cls, kind: str, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, schedule: Schedule):
        """Interpret a raw network output of the given kind."""
        check_prediction_kind(kind)
        a, s = _coefs(schedule.alpha, x, t), _coefs(schedule.sigma, x, t)
        if kind == "x0":
            x0 = output
            eps = (x - a * x0) / s
        elif kind == "eps":
            # x_t = alpha x0 + sigma eps: where alpha = 0 (pure noise) predicted noise says nothing about x0
            _refuse_singular(a == 0, t, "eps", "alpha(t) = 0", "'x0', 'v' or 'flow'")
            eps = output
            x0 = (x - s * eps) / a
        elif kind == "v":
            # [a  s; -s a] [x0; eps] = [x; v]
            det = a * a + s * s
            x0 = (a * x - s * output) / det
            eps = (s * x + a * output) / det
        else:  # flow velocity u = a' x0 + s' eps
            da, ds = _coefs(schedule.d_alpha, x, t), _coefs(schedule.d_sigma, x, t)
            det = a * ds - s * da
            # a flat stretch of alphas_cumprod has alpha' = sigma' = 0: the velocity is 0 whatever x0 is
            _refuse_singular(det == 0, t, "flow", "alpha'(t) = sigma'(t) = 0 (a flat stretch of the schedule)",
                             "'x0', 'eps' or 'v'")
            x0 = (ds * x - s * output) / det
            eps = (a * output - da * x) / det
        return cls(x=x, t=t, x0=x0, eps=eps, schedule=schedule, alpha=a, sigma=s)

    # -- derived forms -----------------------------------------------------------------------
    @property
    def v(self) -> torch.Tensor:
        return self.alpha * self.eps - self.sigma * self.x0

    @property
    def flow(self) -> torch.Tensor:
        da = _coefs(self.schedule.d_alpha, self.x, self.t)
        ds = _coefs(self.schedule.d_sigma, self.x, self.t)
        return da * self.x0 + ds * self.eps

    def as_kind(self, kind: str) -> torch.Tensor:
        """The prediction in the named form (inverse of :meth:`from_output`)."""
        check_prediction_kind(kind)
        return {"x0": lambda: self.x0, "eps": lambda: self.eps, "v": lambda: self.v, "flow": lambda: self.flow}[kind]()


def _coefs(fn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Evaluate a schedule coefficient in float64 and broadcast it against x (in x's dtype)."""
    return _broadcast(fn(t.to(torch.float64)), x)


def _coefs64(fn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Like :func:`_coefs` but kept in float64 (kernels combine coefficients before casting)."""
    return _shaped64(fn(t.to(torch.float64)), x)


def _alpha_sigma64(schedule, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) at t as :func:`_coefs64` gives them, from one schedule evaluation."""
    return tuple(_shaped64(coef, x) for coef in schedule.alpha_sigma(t.to(torch.float64)))


def _shaped64(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    coef = coef.to(x.device)
    return coef.reshape(coef.shape + (1,) * (x.ndim - coef.ndim)) if coef.ndim else coef


def _refuse_singular(singular: torch.Tensor, t: torch.Tensor, kind: str, why: str, alternatives: str) -> None:
    """A clear error instead of the inf/NaN that inverting a singular coefficient system would give."""
    if bool(singular.any()):
        # coefficients are (B, 1, ...) against x, t is (B,) (or one time for the whole batch)
        row = int(singular.reshape(singular.shape[0], -1).any(1).nonzero()[0]) if singular.ndim else 0
        times = t.reshape(-1)
        bad = float(times[row] if times.numel() > 1 else times[0])
        raise DiffalignError(f"prediction={kind!r} cannot give x0 at t={bad:g}, where {why}; "
                             f"use a model with prediction {alternatives} there")


def combine(predictions: list[Prediction], weights: list[float]) -> Prediction:
    """Affine combination sum_i w_i * pred_i (weights summing to 1 keeps it a valid prediction).

    Affine in (x0, eps) is affine in every form, so CFG, RLG and friends are all this one operation.
    """
    first = predictions[0]
    x0 = sum(w * p.x0 for w, p in zip(weights, predictions))
    eps = sum(w * p.eps for w, p in zip(weights, predictions))
    return Prediction(x=first.x, t=first.t, x0=x0, eps=eps, schedule=first.schedule, alpha=first.alpha, sigma=first.sigma)
