"""The ``noisy-reward`` reward: a trained :class:`~.noisy_model.NoisyRewardNet` loaded from a directory.

``da.rewards.get("noisy-reward", path=DIR)`` serves two uses:

* as guidance: :class:`~diffalign.RewardGuidance` sees ``takes_noisy_input`` and differentiates
  ``score_noisy(x_t, t)`` directly in x_t -- no denoiser or decoder in the loop (Flow-NRG, Liu et al.
  2025, arXiv:2501.13918, Sec. 4.3);
* as an ordinary reward on clean images (any sampler): the network at t = 0, after mapping the images
  back to model space.
"""

from __future__ import annotations

import os

import torch

from .base import Reward
from .noisy_model import NoisyRewardNet
from .registry import REWARDS

__all__ = ["NoisyReward"]


@REWARDS.register("noisy-reward")
class NoisyReward(Reward):
    """A reward model on noisy samples. Option: ``path`` (the model directory, or the training run's)."""

    name = "noisy-reward"
    differentiable = True
    takes_noisy_input = True

    def __init__(self, *, path: str | os.PathLike):
        super().__init__()
        self.net = NoisyRewardNet.load(path)

    def score_noisy(self, x_t: torch.Tensor, t, cond=None) -> torch.Tensor:
        """r_phi(x_t, t) for model-space x_t; ``cond`` is accepted for the guidance protocol and unused
        (this model is trained for one reward, unconditionally)."""
        return self.net(x_t, t).to(x_t.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x0 = self.net.images_to_model_space(images)
        return self.net(x0, torch.zeros(images.shape[0], device=images.device)).to(images.dtype)
