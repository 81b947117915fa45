"""Rollouts of the stochastic sampler as a policy: states, per-step Gaussian log-probs, final samples.

The RL view (DDPO / Flow-GRPO): each step x_t -> x_t' of the sampler is a Gaussian action whose
mean comes from the network and whose std from the kernel. :func:`transition` computes that Gaussian
and its log-prob; rollouts and training both call it, with the same batch, so the importance ratio
pi_theta / pi_old of the first inner epoch is exactly 1.

The last step, to t = 0, is taken **deterministically** (its Gaussian mean) and carries no log-prob:
DDIM's step to t = 0 has std 0, and the flow SDE's would leave noise of std ~0.04 in every output.
Every other step is stochastic and trainable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import GaussianStep, Kernel
from ..models.conditioning import Condition, index_condition
from ..models.denoiser import Denoiser


@dataclass
class Trajectories:
    states: torch.Tensor  # (steps + 1, B, *shape): x at every grid time, states[-1] = x0
    log_probs: torch.Tensor  # (steps - 1, B) float64: log-prob of each stochastic step under the sampling policy
    grid: torch.Tensor  # (steps + 1,) times, 1 -> 0
    cond: Condition

    @property
    def samples(self) -> torch.Tensor:
        return self.states[-1]

    @property
    def trainable_steps(self) -> int:
        return self.log_probs.shape[0]

    def select(self, index) -> "Trajectories":
        """Trajectories of a subset of samples."""
        return Trajectories(self.states[:, index], self.log_probs[:, index], self.grid, index_condition(self.cond, index))


def transition(model: Denoiser, kernel: Kernel, x: torch.Tensor, t, t_next, cond: Condition) -> GaussianStep:
    """The Gaussian of x_{t_next} given x_t under ``model`` (one network pass)."""
    pred = model.predict(x, t, cond)
    t_next = torch.as_tensor(t_next, dtype=torch.float64, device=x.device).expand(x.shape[0])
    return kernel(pred, t_next)


@torch.no_grad()
def sample_trajectories(model: Denoiser, kernel: Kernel, grid: torch.Tensor, cond: Condition, n: int,
                        generator: torch.Generator, reduction: str = "mean", record: bool = True) -> Trajectories:
    """``n`` rollouts from fresh noise, recording every state and the log-prob of every stochastic step.

    Noise is drawn on the CPU from ``generator`` so a run is reproducible on any device. With
    ``record=False`` only the final samples are kept (``states`` holds x0 alone, ``log_probs`` is
    empty): the same draws, without the (steps + 1)-fold memory and the log-prob work that preference
    and regression methods do not use.
    """
    x = torch.randn((n, *model.shape), generator=generator).to(model.device, model.dtype)
    states, log_probs = [x], []
    steps = len(grid) - 1
    for i in range(steps):
        step = transition(model, kernel, x, grid[i], grid[i + 1], cond)
        if i == steps - 1 or not kernel.stochastic:
            x = step.mean
        else:
            noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
            x = step.sample(noise)
            if record:
                log_probs.append(step.log_prob(x, reduction))
        if record:
            states.append(x)
    if not record:
        states = [x]
    empty = torch.zeros(0, n, dtype=torch.float64, device=x.device)
    return Trajectories(torch.stack(states), torch.stack(log_probs) if log_probs else empty, grid, cond)
