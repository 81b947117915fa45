"""A schedule whose time grid is the one a diffusers pipeline would step through.

Samplers ask ``model.schedule.time_grid(steps)``; wrapping the family's schedule this way makes every
sampler follow the pipeline's own spacing (SD's "leading"/"trailing" timesteps, SD3's shift, FLUX's
resolution-dependent shift) while alpha/sigma and the time mapping stay those of the base schedule.
diffusers schedulers serve only to produce the grid; no ``scheduler.step`` is ever called.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..schedules import Schedule


class SchedulerGridSchedule(Schedule):
    """``base`` with :meth:`time_grid` replaced by ``grid(steps)`` (a decreasing float64 grid ending at 0)."""

    def __init__(self, base: Schedule, grid: Callable[[int], torch.Tensor]):
        self.base = base
        self._grid = grid
        self._cache: dict[int, torch.Tensor] = {}

    def alpha(self, t):
        return self.base.alpha(t)

    def sigma(self, t):
        return self.base.sigma(t)

    def alpha_sigma(self, t):
        return self.base.alpha_sigma(t)

    def d_alpha(self, t):
        return self.base.d_alpha(t)

    def d_sigma(self, t):
        return self.base.d_sigma(t)

    def model_timestep(self, t):
        return self.base.model_timestep(t)

    def time_from_model_timestep(self, timestep):
        return self.base.time_from_model_timestep(timestep)

    def default_kernel_name(self) -> str:
        return self.base.default_kernel_name()

    def time_grid(self, steps: int) -> torch.Tensor:
        steps = self._check_steps(steps)
        if steps not in self._cache:
            self._cache[steps] = self._grid(steps).to(torch.float64)
        return self._cache[steps].clone()

    def __getattr__(self, name):  # num_train_timesteps, abar, shift... of the base schedule
        if name in ("base", "_grid", "_cache"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __repr__(self) -> str:
        return f"SchedulerGridSchedule({self.base!r})"
