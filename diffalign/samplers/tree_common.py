"""What the exact tree (``dts``) and the paper's tree (``preset="paper"``, ``dts-star``) share: option
checks for stored states, the branching kernel and condition, the identity of a reusable tree, and
the memory-full warning."""

from __future__ import annotations

import os
import warnings
from typing import Optional

import torch

from ..errors import DiffalignError, SamplingWarning, choice_error
from ..kernels import Kernel
from .base import check_positive_int, too_small_budget
from .rollout import resolve_kernel, single_condition

NONFINITE_CHOICES = ("-inf", "error")
MEMORY_CHOICES = ("stop", "error")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


#: without ``max_memory_bytes``, a tree may store states up to this share of its storage device's memory
#: (RAM for CPU storage, the GPU's memory for CUDA storage); a budget whose tree needs more is refused
DEFAULT_MEMORY_FRACTION = 0.5


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of the device that holds the tree's states (physical RAM for the CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def memory_cap(name: str, max_memory_bytes: Optional[int], needed_bytes: int, device: torch.device, nfe: int) -> int:
    """The byte cap a tree grows under: ``max_memory_bytes`` when given (the tree stops growing, or
    raises, when it fills); otherwise :data:`DEFAULT_MEMORY_FRACTION` of the storage device's memory.

    Without an explicit cap, a budget whose tree could need more than the default is refused at once
    (``needed_bytes``: the plan's states, or an upper bound): ``--nfe 1e12`` asked ``dts`` for 667 GB,
    and shrinking such a plan to fit would still run for days.
    """
    if max_memory_bytes is not None:
        return max_memory_bytes
    cap = int(DEFAULT_MEMORY_FRACTION * device_memory_bytes(device))
    if needed_bytes > cap:
        raise DiffalignError(
            f"{name}: nfe={nfe} grows a tree of up to {needed_bytes / 2**30:,.1f} GiB of states, more than the default cap "
            f"of {cap / 2**30:,.1f} GiB ({DEFAULT_MEMORY_FRACTION:.0%} of {device.type} memory); lower nfe, or pass "
            "max_memory_bytes=N to search within N bytes (the tree stops growing when full), or storage_dtype=float16"
        )
    return cap


def check_storage_options(nonfinite_reward: str, on_memory_full: str, storage_dtype, max_memory_bytes) -> torch.dtype:
    """Validate the options on non-finite rewards and stored states; the storage dtype as a torch dtype."""
    if nonfinite_reward not in NONFINITE_CHOICES:
        raise choice_error("nonfinite_reward", nonfinite_reward, list(NONFINITE_CHOICES))
    if on_memory_full not in MEMORY_CHOICES:
        raise choice_error("on_memory_full", on_memory_full, list(MEMORY_CHOICES))
    if isinstance(storage_dtype, str):
        if storage_dtype not in DTYPES:
            raise choice_error("storage_dtype", storage_dtype, list(DTYPES))
        storage_dtype = DTYPES[storage_dtype]
    if max_memory_bytes is not None:
        check_positive_int("max_memory_bytes", max_memory_bytes)
    return storage_dtype


def branching_setup(name: str, model, kernel: Optional[str | Kernel], kernel_options: dict, cond, nfe: Optional[int],
                    steps: int):
    """(kernel, encoded condition, passes per model call) for a tree, with the errors a tree needs:
    a budget, a stochastic kernel to branch with, and room for at least one rollout."""
    if nfe is None:
        raise DiffalignError(f"{name} needs an nfe budget")
    kernel = resolve_kernel(model, kernel, **kernel_options)
    if not kernel.stochastic:
        raise DiffalignError(f"{name} needs a stochastic base kernel to branch; got {kernel!r}")
    encoded = single_condition(model, cond, name)
    evals = model.evals_for(encoded)
    if nfe < steps * evals:
        raise too_small_budget(name, nfe, steps * evals, f"one rollout of {steps} steps")
    return kernel, encoded, evals


def tree_key(model, reward, cond, steps: int) -> tuple:
    """What identifies a reusable tree: the user's own objects (``reward`` may be a fresh wrapper of
    their callable), the condition and the step count."""
    cond_key = tuple(cond.flatten().tolist()) if torch.is_tensor(cond) else cond
    return (id(model.inner), id(getattr(reward, "fn", reward)), cond_key, steps)


def warn_memory_full(name: str, max_memory_bytes: int, info: dict) -> None:
    warnings.warn(
        f"{name}: the tree filled max_memory_bytes={max_memory_bytes} after {info['tree_nfe']} NFE "
        f"({info['nodes']} nodes); it stopped growing and sampled from the tree it had "
        "(raise max_memory_bytes, or use storage_dtype='float16')",
        SamplingWarning, stacklevel=4,
    )


def check_forest_options(trees_per_prompt, max_rows, reuse_tree) -> tuple[int, int]:
    """``trees_per_prompt`` and ``max_rows`` as positive integers; a forest does not reuse a tree."""
    check_positive_int("trees_per_prompt", trees_per_prompt)
    check_positive_int("max_rows", max_rows)
    if reuse_tree and trees_per_prompt > 1:
        raise DiffalignError("reuse_tree grows one tree across calls; it does not combine with trees_per_prompt > 1")
    return trees_per_prompt, max_rows
