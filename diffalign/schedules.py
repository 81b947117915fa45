"""Time convention and noise schedules.

One convention everywhere (design.md §4): t in [0, 1], t = 1 is noise, t = 0 is data, and

    x_t = alpha(t) * x0 + sigma(t) * eps.

* :class:`VPSchedule` -- variance preserving, alpha = sqrt(abar), sigma = sqrt(1 - abar). A discrete
  DDPM schedule of T steps puts paper step k (1-based, ``abar_k``) at t = k / T, i.e. diffusers'
  0-based timestep index ``k - 1`` sits at t = k / T and t = 0 is exactly clean data (abar = 1).
  Between grid points log(abar) is interpolated linearly, so any t in [0, 1] is valid.
* :class:`FlowSchedule` -- rectified flow, alpha = 1 - t, sigma = t, velocity v = eps - x0. The model's
  timestep is ``1000 * t`` (diffusers' FlowMatch convention); an optional ``shift`` warps the time
  grid exactly as SD3's scheduler does.

Schedules also say how to turn t into the network's own timestep (:meth:`Schedule.model_timestep`) and
produce time grids (:meth:`Schedule.time_grid`), so adapters and samplers never branch on the type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .errors import DiffalignError


def _as_tensor(t) -> torch.Tensor:
    return t if isinstance(t, torch.Tensor) else torch.tensor(float(t), dtype=torch.float64)


class Schedule(ABC):
    """Maps continuous time t in [0, 1] to the coefficients of x_t = alpha(t) x0 + sigma(t) eps."""

    @abstractmethod
    def alpha(self, t) -> torch.Tensor: ...

    @abstractmethod
    def sigma(self, t) -> torch.Tensor: ...

    @abstractmethod
    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep value the wrapped network was trained with, for continuous time t."""

    @abstractmethod
    def time_from_model_timestep(self, timestep) -> torch.Tensor:
        """Inverse of :meth:`model_timestep`."""

    @abstractmethod
    def time_grid(self, steps: int) -> torch.Tensor:
        """A decreasing float64 grid of ``steps + 1`` times from the start (noise) to exactly 0."""

    def time_grid_from_scheduler(self, scheduler, steps: int) -> torch.Tensor:
        """The grid a diffusers scheduler would use (its ``timesteps`` as times, then 0).

        diffusers schedulers serve only this purpose here: their spacing options ("leading",
        "trailing", Karras, SD3's shift...) become a plain time grid; no ``scheduler.step`` is called.
        """
        scheduler.set_timesteps(self._check_steps(steps))
        times = self.time_from_model_timestep(torch.as_tensor(scheduler.timesteps, dtype=torch.float64))
        return torch.cat([times, torch.zeros(1, dtype=torch.float64)])

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha(t), sigma(t)), the same values as the two calls; a schedule overrides it when the two
        share work (a kernel step needs both, once per model call)."""
        return self.alpha(t), self.sigma(t)

    def d_alpha(self, t) -> torch.Tensor:
        """d alpha / dt (autograd by default; schedules with closed forms override)."""
        return self._derivative(self.alpha, t)

    def d_sigma(self, t) -> torch.Tensor:
        return self._derivative(self.sigma, t)

    @staticmethod
    def _derivative(fn, t) -> torch.Tensor:
        t = _as_tensor(t)
        with torch.enable_grad():
            tt = t.detach().to(torch.float64).requires_grad_(True)
            (grad,) = torch.autograd.grad(fn(tt).sum(), tt)
        return grad.to(t.dtype)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """Sample the forward process: alpha(t) x0 + sigma(t) noise (t scalar or per-sample)."""
        a = _broadcast(self.alpha(t), x0)
        s = _broadcast(self.sigma(t), x0)
        return a * x0 + s * noise

    #: a model's own default kernel (the zoo sets "euler" on digits-fast's schedule); None: the schedule's
    preferred_kernel: "str | None" = None

    def default_kernel_name(self) -> str:
        """Name of the kernel samplers use unless told otherwise: the model's preferred one, else the
        schedule's stochastic one."""
        return self.preferred_kernel or "ddim"

    @staticmethod
    def _check_steps(steps: int) -> int:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise DiffalignError(f"steps must be a positive integer, got {steps!r}")
        return steps


def _broadcast(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    coef = coef.to(device=like.device, dtype=like.dtype)
    return coef.reshape(coef.shape + (1,) * (like.ndim - coef.ndim)) if coef.ndim else coef


# in units of training steps: positions this close to a knot count as the knot (float64 rounding of k / T * T)
KNOT_TOLERANCE = 1e-9


class VPSchedule(Schedule):
    """Variance-preserving schedule built from a discrete ``alphas_cumprod`` of length T.

    Args:
        alphas_cumprod: abar_k for paper steps k = 1..T (diffusers' ``scheduler.alphas_cumprod``).
    """

    def __init__(self, alphas_cumprod):
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if abar.numel() < 1 or not torch.all((abar > 0) & (abar <= 1)):
            raise DiffalignError("alphas_cumprod must be a non-empty sequence of values in (0, 1]")
        if torch.any(abar[1:] > abar[:-1]):
            raise DiffalignError("alphas_cumprod must be non-increasing")
        self.num_train_timesteps = abar.numel()
        # Knots at t = k / T for k = 0..T, with abar = 1 at t = 0 (clean data).
        self._log_abar = torch.cat([torch.zeros(1, dtype=torch.float64), abar.log()])
        self._table_cache: dict = {}

    # -- constructors matching diffusers' beta schedules ---------------------------------------
    @classmethod
    def from_betas(cls, betas) -> "VPSchedule":
        betas = torch.as_tensor(betas, dtype=torch.float64)
        return cls(torch.cumprod(1.0 - betas, dim=0))

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = 1000):
        return cls.from_betas(torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64))

    @classmethod
    def scaled_linear(cls, beta_start: float = 0.00085, beta_end: float = 0.012, num_train_timesteps: int = 1000):
        """Stable Diffusion's schedule: linear in sqrt(beta)."""
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
        return cls.from_betas(betas)

    @classmethod
    def from_scheduler(cls, scheduler) -> "VPSchedule":
        """Read the schedule of any diffusers scheduler that exposes ``alphas_cumprod``."""
        return cls(scheduler.alphas_cumprod)

    # -- the convention ----------------------------------------------------------------------
    def _segment(self, t):
        """(log abar at t, d log abar / dt), linear between the knots k / T.

        At a knot the derivative is one-sided. Samplers step downward in t from grid times k / T, so
        the slope there is the one of the segment *below* the knot (at t = 0: the first segment).
        """
        log_abar, pos, slopes = self._log_abar_at(t)
        # the tolerance makes a time k / T that does not map back to exactly k still count as the knot
        below = (pos - KNOT_TOLERANCE).ceil().sub_(1).clamp_(0, self.num_train_timesteps - 1).long()
        return log_abar, slopes[below] * self.num_train_timesteps

    def _log_abar_at(self, t):
        """log abar at t (linear between the knots), with the position t T and the segment slopes that
        :meth:`_segment` reuses; alone, it is all that abar, alpha and sigma need."""
        t = _as_tensor(t)
        pos = t.to(torch.float64).clamp(0.0, 1.0) * self.num_train_timesteps
        lo = pos.floor().clamp_(max=self.num_train_timesteps - 1)
        index = lo.long()
        knots, slopes = self._tables(pos.device)
        return knots[index] + slopes[index] * (pos - lo), pos, slopes

    def _tables(self, device):
        """log abar at the knots and the slope of each segment, cached per device."""
        if device not in self._table_cache:
            knots = self._log_abar.to(device)
            self._table_cache[device] = (knots, knots[1:] - knots[:-1])
        return self._table_cache[device]

    def abar(self, t) -> torch.Tensor:
        t = _as_tensor(t)
        log_abar = self._log_abar_at(t)[0]
        return log_abar.exp().to(t.dtype if t.is_floating_point() else torch.float64)

    def alpha(self, t) -> torch.Tensor:
        return self.abar(t).sqrt()

    def sigma(self, t) -> torch.Tensor:
        return (1.0 - self.abar(t)).clamp(min=0.0).sqrt()

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        abar = self.abar(t)  # once for both: the same values as alpha(t) and sigma(t)
        return abar.sqrt(), (1.0 - abar).clamp(min=0.0).sqrt()

    def d_alpha(self, t) -> torch.Tensor:
        # alpha = exp(log_abar / 2); closed form avoids autograd's zero gradient at the clamp edges
        log_abar, slope = self._segment(t)
        return (0.5 * slope * (0.5 * log_abar).exp()).to(_as_tensor(t).dtype)

    def d_sigma(self, t) -> torch.Tensor:
        log_abar, slope = self._segment(t)
        abar = log_abar.exp()
        return (-0.5 * slope * abar / (1.0 - abar).sqrt()).to(_as_tensor(t).dtype)

    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        # paper step k = t * T  <->  diffusers index k - 1
        return t * self.num_train_timesteps - 1.0

    def time_grid(self, steps: int) -> torch.Tensor:
        """Evenly spaced training steps ("trailing" spacing): T, T - T/steps, ..., 0, as times k/T."""
        steps = self._check_steps(steps)
        if steps > self.num_train_timesteps:
            raise DiffalignError(f"steps={steps} exceeds the schedule's {self.num_train_timesteps} training steps")
        ks = torch.round(torch.linspace(self.num_train_timesteps, 0, steps + 1, dtype=torch.float64))
        return ks / self.num_train_timesteps

    def time_from_model_timestep(self, timestep) -> torch.Tensor:
        return (torch.as_tensor(timestep, dtype=torch.float64) + 1.0) / self.num_train_timesteps

    def __repr__(self) -> str:
        return f"VPSchedule(T={self.num_train_timesteps})"


class FlowSchedule(Schedule):
    """Rectified-flow schedule: alpha = 1 - t, sigma = t (diffusers' FlowMatch sigmas).

    Args:
        shift: SD3's timestep shift; the grid uses t' = shift t / (1 + (shift - 1) t).
        num_train_timesteps: the network's timestep scale (model timestep = t * this).
    """

    def __init__(self, shift: float = 1.0, num_train_timesteps: int = 1000):
        if not shift > 0:
            raise DiffalignError(f"shift must be positive, got {shift!r}")
        self.shift = float(shift)
        self.num_train_timesteps = int(num_train_timesteps)

    @classmethod
    def from_scheduler(cls, scheduler) -> "FlowSchedule":
        cfg = scheduler.config
        return cls(shift=cfg.get("shift", 1.0), num_train_timesteps=cfg.get("num_train_timesteps", 1000))

    def alpha(self, t) -> torch.Tensor:
        return 1.0 - _as_tensor(t)

    def sigma(self, t) -> torch.Tensor:
        return _as_tensor(t) * 1.0

    def d_alpha(self, t) -> torch.Tensor:
        return torch.full_like(_as_tensor(t), -1.0)

    def d_sigma(self, t) -> torch.Tensor:
        return torch.ones_like(_as_tensor(t))

    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.num_train_timesteps

    def time_from_model_timestep(self, timestep) -> torch.Tensor:
        return torch.as_tensor(timestep, dtype=torch.float64) / self.num_train_timesteps

    def time_grid(self, steps: int) -> torch.Tensor:
        steps = self._check_steps(steps)
        u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        return self.shift * u / (1.0 + (self.shift - 1.0) * u)

    def default_kernel_name(self) -> str:
        return self.preferred_kernel or "flow-sde"

    def __repr__(self) -> str:
        return f"FlowSchedule(shift={self.shift})"


def log_snr(schedule: Schedule, t) -> torch.Tensor:
    """log(alpha^2 / sigma^2); +inf at t = 0."""
    return 2 * (schedule.alpha(t).log() - schedule.sigma(t).log())


__all__ = ["Schedule", "VPSchedule", "FlowSchedule", "log_snr"]
