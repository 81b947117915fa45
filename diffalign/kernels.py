"""Pure, stateless step kernels: (x_t, prediction, t_next) -> Gaussian over x_{t_next}.

No diffusers scheduler state is involved: a kernel is a closed-form function of the current sample,
the denoiser's :class:`~diffalign.models.Prediction` at (x_t, t), and the next time. Every kernel returns a
:class:`GaussianStep` (mean, std), so ancestral sampling, tree branching and the log-probs that RL
fine-tuning needs share one code path; deterministic kernels have std = 0.

* :class:`DDIM` -- Song et al. 2021, eq. (12), with eta in [0, 1]: eta = 1 is DDPM's ancestral
  posterior q(x_{t'} | x_t, x0_hat) (Ho et al. 2020, eq. (7)), eta = 0 the deterministic DDIM ODE. The
  variance is written for any schedule x_t = alpha x0 + sigma eps, so it applies to flow models too.
* :class:`Euler` -- the probability-flow ODE, x' = x + (t' - t) dx/dt, with dx/dt the flow velocity.
* :class:`FlowSDE` -- Euler-Maruyama on the reverse SDE with diffusion g(t) = a sqrt(t / (1 - t))
  (the Flow-GRPO SDE, Liu et al. 2025, eq. (8)); ``noise_level`` is a. Its step from t = 1 takes g's
  denominator at the next grid time, as Flow-GRPO does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .errors import DiffalignError
from .models.prediction import Prediction, _alpha_sigma64, _coefs64
from .registry import Registry

LOG_2PI = math.log(2 * math.pi)


LOG_PROB_REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class GaussianStep:
    """N(mean, std^2 I) over x_{t_next}; std broadcasts against mean (a scalar per sample).

    ``mean`` is in the sample's dtype; ``std`` is kept in float64 because the log-density of a large
    latent is a sum of ~1e5 terms, which float16 overflows and bfloat16 rounds in steps of hundreds.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def sample(self, noise: Optional[torch.Tensor]) -> torch.Tensor:
        if noise is None:
            return self.mean
        return self.mean + self.std.to(self.mean.dtype) * noise

    @property
    def is_deterministic(self) -> bool:
        return bool(torch.all(self.std == 0))

    def log_prob(self, x_next: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """Per-sample log density in float64, over all non-batch dimensions.

        ``reduction="sum"`` is the exact log-density of x_next; ``"mean"`` divides it by the number of
        elements (Flow-GRPO's convention: a per-element log-likelihood, whose PPO clip range is then a
        per-element one, d times smaller in log-ratio terms than the summed form's).
        """
        if reduction not in LOG_PROB_REDUCTIONS:
            raise DiffalignError(f"unknown log_prob reduction {reduction!r}; valid choices: sum, mean")
        std = self.std.to(torch.float64).expand(self.mean.shape)
        if torch.any(std <= 0):
            raise DiffalignError("log_prob is undefined for a deterministic step (std = 0)")
        z = (x_next.to(torch.float64) - self.mean.to(torch.float64)) / std
        per_elem = (-0.5 * z.square() - std.log() - 0.5 * LOG_2PI).flatten(1)
        return per_elem.sum(1) if reduction == "sum" else per_elem.mean(1)


class Kernel:
    """A step rule. Subclasses implement :meth:`__call__`; ``stochastic`` says whether it draws noise."""

    stochastic: bool = True

    def __call__(self, pred: Prediction, t_next: torch.Tensor) -> GaussianStep:
        raise NotImplementedError

    def step_parameters(self) -> Optional[tuple]:
        """What, with the class, defines the step: two kernels of one class with equal parameters step
        alike and compare equal, so a forest (``samplers/forest.py``) steps all its trees' rows in one
        call. None (the default for a kernel that does not say): a kernel equals only itself."""
        return None

    def __eq__(self, other) -> bool:
        mine = self.step_parameters()
        if mine is None or type(other) is not type(self):
            return self is other
        return other.step_parameters() == mine

    def __hash__(self) -> int:
        mine = self.step_parameters()
        return id(self) if mine is None else hash((type(self), mine))

    def step(self, pred: Prediction, t_next, noise: Optional[torch.Tensor]) -> torch.Tensor:
        """x_{t_next} = mean + std * noise (design.md's (x, pred, t, t_next, noise) -> x_next)."""
        t_next = _times_like(t_next, pred.t)
        return self(pred, t_next).sample(noise if self.stochastic else None)


def _times_like(t_next, t: torch.Tensor) -> torch.Tensor:
    t_next = torch.as_tensor(t_next, dtype=torch.float64, device=t.device)
    return t_next.expand(t.shape) if t_next.ndim == 0 else t_next


KERNELS: Registry[Kernel] = Registry("kernel")


@KERNELS.register("ddim")
class DDIM(Kernel):
    """DDIM(eta): mean = a' x0 + sqrt(s'^2 - c^2) eps, std = c, c^2 = eta^2 s'^2 (1 - (a s')^2 / (a' s)^2).

    At eta = 1, c^2 is the variance of the forward-process posterior q(x_{t'} | x_t, x0), which makes
    this the DDPM ancestral step; at t' = 0 the step returns x0_hat exactly.
    """

    def __init__(self, eta: float = 1.0):
        if not 0.0 <= float(eta) <= 1.0:
            raise DiffalignError(f"eta must lie in [0, 1], got {eta!r}")
        self.eta = float(eta)
        self.stochastic = self.eta > 0

    def __call__(self, pred, t_next):
        # Coefficients are formed in float64 and cast only at the end: 1 - ratio^2 is a difference of
        # nearly equal numbers, which bfloat16 would get ~2% wrong.
        x, schedule = pred.x, pred.schedule
        a, s = _alpha_sigma64(schedule, x, pred.t)
        a_next, s_next = _alpha_sigma64(schedule, x, t_next)
        ratio = (a * s_next) / (a_next * s)
        var = (self.eta**2) * s_next.square() * (1.0 - ratio.square()).clamp(min=0.0)
        var = torch.where(s_next > 0, var, torch.zeros_like(var))
        eps_coef = (s_next.square() - var).clamp(min=0.0).sqrt()
        mean = a_next.to(x.dtype) * pred.x0 + eps_coef.to(x.dtype) * pred.eps
        return GaussianStep(mean, var.sqrt())

    def step_parameters(self):
        return (self.eta,)

    def __repr__(self):
        return f"DDIM(eta={self.eta})"


@KERNELS.register("ddpm")
def ddpm() -> DDIM:
    """DDPM ancestral sampling = DDIM with eta = 1."""
    return DDIM(eta=1.0)


@KERNELS.register("euler")
class Euler(Kernel):
    """Euler step of the probability-flow ODE: x' = x + (t' - t) * dx/dt."""

    stochastic = False

    def __call__(self, pred, t_next):
        dt = _coefs64(lambda t: t, pred.x, t_next - pred.t)
        mean = pred.x + dt.to(pred.x.dtype) * pred.flow
        return GaussianStep(mean, torch.zeros_like(dt))

    def step_parameters(self):
        return ()

    def __repr__(self):
        return "Euler()"


@KERNELS.register("flow-sde")
class FlowSDE(Kernel):
    """Euler-Maruyama step of the marginal-preserving reverse SDE of a flow model (Flow-GRPO).

    With velocity u and score = -eps / sigma, going from t to t' = t - h (Liu et al. 2025, arXiv
    2505.05470, eq. 8 discretised as their eq. 9):
        mean = x - h (u + g^2 / (2 sigma) eps),   std = g sqrt(h),   g^2 = a^2 t / (1 - t).
    ``noise_level`` = a; a = 0 gives the Euler ODE.

    **The step from t = 1.** g diverges at t = 1. Flow-GRPO's reference implementation evaluates the
    denominator there at the next grid time, g^2 = a^2 t / (1 - t') (its ``sigma_max = sigmas[1]``), and
    so do we. The noise is then tied to the step size: at a 10-step grid the first step's eps
    coefficient is h g^2 / (2 t) = a^2 / 2 = 0.245 and the chain stays near the true marginal. (The
    earlier rule, g at min(t, 0.98) whatever the step, gave a coefficient of 1.2 at 10 steps, so x
    entered the mean with -0.2 and the std at t = 0.9 was 1.57 against a true 0.90.) Every other step
    uses g at its own t, exactly as the reference does, so mean, std and log-prob agree with it to
    float64 rounding (``tests/test_flow_sde.py``).

    **Discretisation.** Near t = 1 the SDE is stiff: with 1 - t = k h the eps coefficient is about
    a^2 / (2k) whatever h is, so the excess variance of the first steps, about a^4 / (4 k^2) per step,
    does not vanish as h -> 0; the drift contracts it away over the following steps.

    **The last step.** The step to t = 0 is Gaussian too, with std g sqrt(h) = a sqrt(h^2 / (1 - h))
    (0.074 at a = 0.7 and 10 steps). The samplers' ``rollout`` draws it, so their flow-sde samples
    keep that noise; GRPO's trajectories take its mean (``trainers/trajectories.py``), so a policy
    trained with GRPO is evaluated by ``da.sample(..., kernel="flow-sde")`` with slightly noisier
    outputs than it was trained on. Use ``kernel="euler"`` (or the mean) for the trained behaviour.
    """

    def __init__(self, noise_level: float = 0.7):
        noise_level = float(noise_level)
        if not (math.isfinite(noise_level) and noise_level >= 0):
            raise DiffalignError(f"noise_level must be a finite number >= 0, got {noise_level!r}")
        self.noise_level = noise_level
        self.stochastic = self.noise_level > 0

    def __call__(self, pred, t_next):
        x, dtype = pred.x, pred.x.dtype
        t = _coefs64(lambda t: t, x, pred.t)
        t_to = _coefs64(lambda t: t, x, t_next)
        h = t - t_to
        # 1 - t is 0 at t = 1: use the next grid time there, as Flow-GRPO does (see the class docstring)
        denominator = torch.where(t >= 1.0, 1.0 - t_to, 1.0 - t)
        g2 = self.noise_level**2 * t / denominator
        eps_coef = h * g2 / (2.0 * _coefs64(pred.schedule.sigma, x, pred.t))
        mean = x - h.to(dtype) * pred.flow - eps_coef.to(dtype) * pred.eps
        return GaussianStep(mean, (g2 * h).sqrt())

    def step_parameters(self):
        return (self.noise_level,)

    def __repr__(self):
        return f"FlowSDE(noise_level={self.noise_level})"


def get_kernel(name: str, **options) -> Kernel:
    return KERNELS.get(name, **options)
