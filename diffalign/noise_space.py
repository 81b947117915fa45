"""Objectives on the initial noise z of a deterministic generator x0 = g(z) (ReNO and HyperNoise).

Pure functions, one value per sample. The target in noise space is ``p*(z) ∝ N(z; 0, I) exp(r(g(z)))``
(HyperNoise, Eyring et al. 2025, arXiv:2508.09968, its noise-space target).

* ReNO (Eyring et al. 2024, arXiv:2406.04312, its noise regulariser) keeps z typical for N(0, I) with the negative
  log-density of its norm, a chi distribution with d degrees of freedom:
  ``-log chi_d(||z||) = ||z||^2 / 2 - (d - 1) log ||z|| + const``.
* HyperNoise (arXiv:2508.09968, its training objective) learns z' = z + f(z). The KL of the pushforward of N(0, I)
  to N(0, I) is, by the change of variables and Stein's lemma (E[z . f(z)] = E[Tr J]),

      KL = E[ ||f(z)||^2 / 2 + Tr J(z) - log |det(I + J(z))| ],     J = df/dz,

  and its practical approximation drops the last two terms (they cancel to second order in J).
"""

from __future__ import annotations

from typing import Optional

import torch


def chi_norm_regularizer(z: torch.Tensor) -> torch.Tensor:
    """ReNO's norm regulariser per sample: ``||z||^2 / 2 - (d - 1) log ||z||`` (minimal at ||z|| = sqrt(d - 1)).

    Computed and returned in float64 whatever z's dtype, as ReNO's reference casts to a wide type: the
    two terms are each ~d/2 and nearly cancel, so in bfloat16 the gradient z (1 - (d - 1) / ||z||^2)
    is lost entirely (100% error at d = 4096), and in float16 ||z||^2 overflows for a 4x128x128 latent
    (65,536 > 65,504) and the value is infinite. Autograd casts the gradient back to z's dtype.
    """
    flat = z.flatten(1).to(torch.float64)
    norm = flat.norm(dim=1)
    return 0.5 * norm.square() - (flat.shape[1] - 1) * torch.log(norm)


def offset_penalty(offset: torch.Tensor) -> torch.Tensor:
    """HyperNoise's KL approximation per sample: ``||f(z)||^2 / 2``."""
    return 0.5 * offset.flatten(1).square().sum(dim=1)


def logdet_correction(jacobian: torch.Tensor) -> torch.Tensor:
    """The exact-KL terms the approximation drops, per sample: ``Tr J - log |det(I + J)|`` for J (B, d, d)."""
    eye = torch.eye(jacobian.shape[-1], dtype=jacobian.dtype, device=jacobian.device)
    trace = jacobian.diagonal(dim1=-2, dim2=-1).sum(-1)
    return trace - torch.linalg.slogdet(eye + jacobian).logabsdet


def batch_jacobian(offset: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """df/dz per sample, (B, d, d), differentiable (d backward passes; rows of the batch never mix)."""
    flat = offset.flatten(1)
    rows = []
    for i in range(flat.shape[1]):
        (grad,) = torch.autograd.grad(flat[:, i].sum(), z, create_graph=True)
        rows.append(grad.flatten(1))
    return torch.stack(rows, dim=1)


def hypernoise_loss(offset: torch.Tensor, reward: torch.Tensor, reward_weight: float = 1.0,
                    correction: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over the batch of ``||f||^2 / 2 [+ Tr J - log det(I + J)] - reward_weight * r(g(z + f))``."""
    loss = offset_penalty(offset) - reward_weight * reward.reshape(-1)
    if correction is not None:
        loss = loss + correction
    return loss.mean()
