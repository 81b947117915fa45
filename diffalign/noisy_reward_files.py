"""Size limits of the noisy reward network, and the torch-free check of its saved files.

Both the ``noisy_reward`` trainer's config (checked before torch is imported) and
:meth:`~diffalign.rewards.noisy_model.NoisyRewardNet.load` use them, so they live below both layers.
"""

from __future__ import annotations

import math
import os

from .errors import DiffalignError

# caps: hidden = 16384 is already 268M weights (1 GiB in float32) in the middle layer alone
MAX_HIDDEN = 16384
MAX_TIME_FEATURES = 4096


def check_noisy_reward_files(config: dict, weights_path) -> None:
    """Refuse a noisy-reward ``config.json`` that promises more weights than its safetensors file
    holds (a huge ``hidden`` or ``time_features`` would allocate tens of GB before loading failed),
    reading only the file's size. ``rewards/noisy_model.py`` calls it before building the network."""
    try:
        shape = [int(s) for s in config["shape"]]
        hidden, features = int(config.get("hidden", 256)), int(config.get("time_features", 8))
    except (KeyError, TypeError, ValueError):
        raise DiffalignError(f"noisy reward config beside {weights_path} lacks a valid shape, hidden or time_features") from None
    if not (1 <= hidden <= MAX_HIDDEN and 0 <= features <= MAX_TIME_FEATURES and all(s >= 1 for s in shape)):
        raise DiffalignError(f"noisy reward config beside {weights_path}: hidden={hidden} (1..{MAX_HIDDEN}), "
                             f"time_features={features} (0..{MAX_TIME_FEATURES}) or shape {shape} out of range")
    inputs = math.prod(shape) + 1 + 2 * features
    weights = inputs * hidden + hidden + hidden * hidden + hidden + hidden + 1
    size = os.path.getsize(weights_path) if os.path.isfile(weights_path) else 0
    if 4 * weights > size:  # float32 weights; the header only adds to the file
        raise DiffalignError(f"noisy reward config promises {weights:,} weights (hidden={hidden}), but {weights_path} "
                             f"holds {size:,} bytes; the config and the weights do not match")
