"""Importance weights shared by SIR and SMC: normalisation, effective sample size, resampling."""

from __future__ import annotations

import torch

from ..errors import DiffalignError


def normalized_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """softmax of log-weights, with -inf (and NaN, treated as -inf) getting zero mass."""
    # neginf must be given: nan_to_num's default turns -inf into the lowest finite double, which made an
    # all -inf pool look valid and resample uniformly
    lw = torch.nan_to_num(log_weights.double(), nan=-float("inf"), neginf=-float("inf"))
    if not torch.isfinite(lw.max()):
        raise DiffalignError("every particle has weight zero (every reward is -inf, or NaN or +inf, which count as -inf)")
    return torch.softmax(lw, dim=0)


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """ESS = 1 / sum w_i^2 for normalised weights (Kong 1992)."""
    w = normalized_weights(log_weights)
    return float(1.0 / (w * w).sum())


def systematic_resample(log_weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n ancestor indices by systematic resampling (lower variance than multinomial; Kitagawa 1996)."""
    w = normalized_weights(log_weights).cpu()
    u = (torch.rand(1, generator=generator, dtype=torch.float64, device=generator.device).cpu() + torch.arange(n, dtype=torch.float64)) / n
    cdf = torch.cumsum(w, 0)
    cdf[-1] = 1.0
    return torch.searchsorted(cdf, u).clamp(max=len(w) - 1)


def multinomial_resample(log_weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    w = normalized_weights(log_weights).cpu().float()
    return torch.multinomial(w, n, replacement=True, generator=_cpu(generator))


def _cpu(generator: torch.Generator) -> torch.Generator:
    if generator.device.type == "cpu":
        return generator
    return torch.Generator().manual_seed(generator.initial_seed())
