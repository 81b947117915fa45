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


def broadcast_condition(cond: Condition, batch_size: int) -> Condition:
    """A batch-1 condition repeated to ``batch_size`` rows (a view); any other batch is left as is.

    Users naturally pass one prompt embedding for many samples; samplers then index rows freely.
    """
    if not cond or condition_batch_size(cond) != 1 or batch_size == 1:
        return cond
    return {key: value.expand(batch_size, *value.shape[1:]) for key, value in cond.items()}


def describe_condition(cond) -> str:
    """``{'key': (shape)}`` of a condition dict, or the repr of anything else (for error messages)."""
    if isinstance(cond, dict):
        return "{" + ", ".join(f"{k!r}: {tuple(v.shape) if torch.is_tensor(v) else type(v).__name__}"
                               for k, v in cond.items()) + "}"
    return repr(cond)


def check_condition(owner: str, cond, expected: Dict[str, tuple], batch_size: Optional[int]) -> None:
    """One error for a missing or malformed condition that shows the expected keys and shapes.

    ``expected`` maps each required key to its shape with ``"B"`` for the batch and ``None`` for any
    size (e.g. a prompt's token count); ``batch_size`` None accepts any batch.
    """
    ok = isinstance(cond, dict) and all(key in cond and _shape_matches(cond[key], shape, batch_size)
                                        for key, shape in expected.items())
    if ok:
        return
    wanted = ", ".join(f"{key!r}: ({', '.join('L' if s is None else str(s) for s in shape)})"
                       for key, shape in expected.items())
    from ..errors import DiffalignError

    raise DiffalignError(
        f"{owner} needs cond as a dict of tensors {{{wanted}}} ({'B = any batch' if batch_size is None else f'B = {batch_size} or 1'}, L = any token count), "
        f"or a prompt string when the model has a text encoder; got {describe_condition(cond)}"
    )


def _shape_matches(value, shape: tuple, batch_size: int) -> bool:
    if not torch.is_tensor(value) or value.ndim != len(shape):
        return False
    return all(s is None or (s == "B" and (batch_size is None or d in (1, batch_size))) or d == s for d, s in zip(value.shape, shape))
