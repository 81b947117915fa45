"""Pieces shared by the regression-style trainers (DPO, RWR): noising, prediction error, sampling.

The error is measured on the network's *own* target -- the velocity eps - x0 for flow models (Flow-DPO,
Flow-RWR), eps for eps-models (Diffusion-DPO), v for v-models -- obtained from the true (x0, eps) through
:class:`~diffalign.models.Prediction`, so no method branches on the model type.
"""

from __future__ import annotations

import torch

from ..kernels import Kernel
from ..models.conditioning import Condition
from ..models.denoiser import Denoiser
from ..models.prediction import Prediction
from .losses import per_sample_squared_error
from .trajectories import sample_trajectories


def training_times(n: int, generator: torch.Generator, t_min: float = 1e-3, t_max: float = 1.0) -> torch.Tensor:
    """Uniform t in [t_min, t_max] (float64; t = 1 is noise)."""
    return t_min + (t_max - t_min) * torch.rand(n, generator=generator, dtype=torch.float64)


def prediction_error(model: Denoiser, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
    """Per-sample mean squared error of the network's prediction at x_t = alpha x0 + sigma noise."""
    schedule = model.schedule
    t = t.to(x0.device)
    x_t = schedule.add_noise(x0, noise, t).to(x0.dtype)
    target = Prediction(x=x_t, t=t, x0=x0, eps=noise, schedule=schedule).as_kind(model.prediction)
    return per_sample_squared_error(model(x_t, t, cond), target)


def generate(model: Denoiser, kernel: Kernel, steps: int, cond: Condition, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` samples (model space) from the current policy, without gradients."""
    return sample_trajectories(model, kernel, model.schedule.time_grid(steps), cond, n, generator, record=False).samples


@torch.no_grad()
def score(reward, model: Denoiser, x0: torch.Tensor, prompts=None, metadata=None) -> torch.Tensor:
    """Rewards of model-space samples, float32 (B,); ``prompts`` / ``metadata``: one per sample, or None."""
    if prompts is None:
        return reward(model.decode(x0)).reshape(-1).float()
    return reward(model.decode(x0), prompts=prompts, metadata=metadata).reshape(-1).float()
