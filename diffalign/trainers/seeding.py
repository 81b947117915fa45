"""Reproducible randomness of training: one generator per (seed, step, micro-batch, ...) key tuple, so a
micro-batch's draws do not depend on the number of processes or on where a run was resumed."""

from __future__ import annotations

import numpy as np
import torch


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator determined by the integer keys alone (numpy's SeedSequence mixes them)."""
    seed = int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)
