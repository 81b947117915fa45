"""Denoiser wrappers that need rewards: :class:`RewardGuidance` (DPS-style and Flow-NRG reward guidance).

They sit above :mod:`diffalign.rewards` and below the samplers, so :mod:`diffalign.models` never imports
a reward (RLG, which needs none, stays in :mod:`diffalign.models.rlg`).
"""

from .reward_guidance import RewardGuidance

__all__ = ["RewardGuidance"]
