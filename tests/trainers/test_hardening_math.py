"""Trainer maths from issue 22: EMA warm-up, GRPO's first gradient, the KL against Monte Carlo.

Each test failed on the code before its fix, or covers a check the issue found missing.
"""

import math

import pytest
import torch

from diffalign.trainers import get_trainer


@pytest.mark.parametrize("warmup,expected", [(True, 3 / 12), (False, 0.999)])
def test_effective_ema_decay_is_exposed_and_logged(tiny_config, tmp_path, warmup, expected):
    """diffusers' warm-up gives (1 + n) / (10 + n) at update n + 1, not the configured 0.999; the run
    logs the effective value, and ema_warmup=false turns the ramp off. Failed before: no ema_warmup key
    and no ema_decay metric."""
    config = tiny_config("rwr", train={"ema_decay": 0.999, "ema_warmup": warmup, "max_steps": 3})
    metrics = get_trainer("rwr")(config, tmp_path).train()
    assert metrics["ema_decay"] == pytest.approx(expected)
