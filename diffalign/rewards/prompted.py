"""A reward with its prompt fixed: what a sampler hands to a one-prompt search (design.md §3b).

Samplers that search one prompt at a time (the trees, ReNO, HyperNoise) were written for
``reward(images)``; binding the prompt keeps them unchanged while every image they score is scored
against its own prompt.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Reward

__all__ = ["PromptBoundReward"]


class PromptBoundReward(Reward):
    """``reward(images, prompts=[prompt] * B, metadata=[metadata] * B)`` as a one-argument reward."""

    expects_images = False  # the wrapped reward checks its own input

    def __init__(self, reward: Reward, prompt: str, metadata: Any = None):
        super().__init__()
        self.reward = reward
        self.prompt = prompt
        self.metadata = metadata
        self.name = reward.name
        self.differentiable = reward.differentiable

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.shape[0]
        metadata = None if self.metadata is None else [self.metadata] * batch
        return self.reward(images, prompts=[self.prompt] * batch, metadata=metadata)

    def extra_repr(self) -> str:
        return f"prompt={self.prompt!r}"
