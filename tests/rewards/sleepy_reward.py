"""A slow prompt-aware reward for the server tests, registered when ``serve-reward --import``s this module.

``sleepy`` sleeps ``$SLEEPY_REWARD_DELAY`` seconds per call (a stand-in for a large model on a busy GPU: the time
passes without holding the GIL), then scores mean brightness plus the prompt's length, so a test can
see that each image's own prompt reached the server. ``prompt=`` is the default of prompt-free calls.
"""

import os
import time

import torch

from diffalign.rewards import REWARDS, Reward

DELAY = float(os.environ.get("SLEEPY_REWARD_DELAY", "0.4"))


@REWARDS.register("sleepy")
class SleepyReward(Reward):
    name = "sleepy"
    needs_prompts = True

    def __init__(self, prompt=None):
        super().__init__()
        self.prompt = prompt

    def default_prompts(self, batch_size):
        return None if self.prompt is None else [self.prompt] * batch_size

    def forward(self, images, prompts=None, metadata=None):
        time.sleep(DELAY)
        lengths = torch.tensor([float(len(p)) for p in prompts], dtype=images.dtype, device=images.device)
        return images.mean(dim=(1, 2, 3)) + lengths
