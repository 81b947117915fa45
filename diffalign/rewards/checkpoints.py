"""Loading a reward model's state dict exactly, with a one-line error that names what does not fit.

``nn.Module.load_state_dict(strict=True)`` reports mismatches over many lines, starting with a line
that says nothing ("Error(s) in loading state_dict for ..."); a reward's loader needs one line that
names the first missing / unexpected / mis-shaped keys, so the user sees at once whether the file is
the wrong checkpoint or the wrong architecture.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import DiffalignError

__all__ = ["load_state_exactly"]


def load_state_exactly(model: nn.Module, state: dict, reward: str, source: str) -> None:
    """Copy ``state`` into ``model``; every model tensor must be there with its shape, and nothing else."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and torch.is_tensor(state[k]) and state[k].shape != own[k].shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            problems.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    if problems:
        raise DiffalignError(f"reward {reward!r}: {source} does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
