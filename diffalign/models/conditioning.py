"""Encoded conditioning: a dict of batch-first tensors (or ``None`` for an unconditional model).

Users pass whatever their model understands (a class label, a prompt); the denoiser's
``encode_condition`` turns it into this form once, and samplers only ever index, repeat and concatenate
it -- which is all that branching trees, particle resampling and CFG's doubled batch need.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

Condition = Optional[Dict[str, torch.Tensor]]


def index_condition(cond: Condition, index) -> Condition:
    """Rows ``index`` of every tensor (index: a LongTensor, a slice or a boolean mask)."""
    if cond is None:
        return None
    return {key: value[index] for key, value in cond.items()}


def cat_conditions(conds: list[Condition]) -> Condition:
    if conds[0] is None:
        return None
    return {key: torch.cat([c[key] for c in conds], dim=0) for key in conds[0]}


def condition_batch_size(cond: Condition) -> Optional[int]:
    if not cond:
        return None
    return next(iter(cond.values())).shape[0]
