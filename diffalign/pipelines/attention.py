"""Attention backends for a borrowed pipeline: PyTorch SDPA (default) or xformers (the ``xformers`` extra)."""

from __future__ import annotations

import importlib.util
from typing import Optional

from ..errors import DiffalignError

ATTENTION_BACKENDS = ("sdpa", "xformers")


def check_attention(attention: Optional[str], device=None) -> Optional[str]:
    """Validate the name (and, for xformers, that it is installed and a CUDA device is used)."""
    if attention is None or attention == "sdpa":
        return attention
    if attention not in ATTENTION_BACKENDS:
        raise DiffalignError(f"unknown attention {attention!r}; valid choices: {', '.join(ATTENTION_BACKENDS)}")
    if importlib.util.find_spec("xformers") is None:
        raise DiffalignError("attention 'xformers' needs the xformers package: pip install 'diffalign[xformers]' "
                             "(or use the default 'sdpa')")
    if device is not None and getattr(device, "type", str(device)) != "cuda":
        raise DiffalignError(f"attention 'xformers' runs on CUDA only; the pipeline is on {device} (use 'sdpa')")
    return attention


def enable_attention(pipe, attention: Optional[str]) -> None:
    """Switch ``pipe``'s attention processors (in place, shared components included)."""
    if check_attention(attention, pipe.device) == "xformers":
        pipe.enable_xformers_memory_efficient_attention()
