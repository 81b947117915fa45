"""Exact denoisers for analytic data distributions -- the oracles the tests and benchmarks check against.

For data x0 ~ sum_k w_k N(mu_k, diag(s_k^2)) and x_t = alpha x0 + sigma eps, everything is closed form:

    x_t | k ~ N(alpha mu_k, alpha^2 s_k^2 + sigma^2),
    E[x0 | x_t, k] = mu_k + alpha s_k^2 / (alpha^2 s_k^2 + sigma^2) (x_t - alpha mu_k),
    E[x0 | x_t] = sum_k p(k | x_t) E[x0 | x_t, k].

So a sampler run on :func:`gmm_denoiser` must reproduce the mixture exactly (up to discretisation),
and tilted targets such as p(x0) exp(lambda r(x0)) have exact answers to compare with.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .errors import DiffalignError
from .models.denoiser import FunctionDenoiser
from .schedules import Schedule


class GaussianMixture:
    """sum_k w_k N(means_k, diag(stds_k^2)) in D dimensions (stds: scalar, (K,) or (K, D))."""

    def __init__(self, means, stds, weights: Optional[torch.Tensor] = None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.ndim == 1:
            self.means = self.means[None]
        k, d = self.means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        self.stds = stds.reshape(-1, 1).expand(k, d).clone() if stds.ndim <= 1 else stds.clone()
        w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> torch.Tensor:
        mu = self.mean()
        second = sum(
            w * (torch.diag(s**2) + torch.outer(m, m)) for w, m, s in zip(self.weights, self.means, self.stds)
        )
        return second - torch.outer(mu, mu)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k] * noise

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self._component_log_probs(x.to(torch.float64), 1.0, 0.0).logsumexp(-1)

    def _component_log_probs(self, x, alpha, sigma):
        """log w_k + log N(x; alpha mu_k, alpha^2 s_k^2 + sigma^2), shape (B, K)."""
        var = alpha**2 * self.stds**2 + sigma**2  # (B|1, K, D) after broadcasting below
        diff = x[:, None, :] - alpha * self.means[None]
        log_n = -0.5 * (diff**2 / var + var.log() + math.log(2 * math.pi)).sum(-1)
        return self.weights.log()[None] + log_n

    def posterior_mean(self, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_t] for per-sample alpha, sigma of shape (B,)."""
        x = x_t.to(torch.float64)
        a = alpha.to(torch.float64).reshape(-1, 1, 1)
        s = sigma.to(torch.float64).reshape(-1, 1, 1)
        var = a**2 * self.stds[None] ** 2 + s**2  # (B, K, D)
        diff = x[:, None, :] - a * self.means[None]
        log_r = self.weights.log()[None] - 0.5 * (diff**2 / var + var.log()).sum(-1)
        resp = torch.softmax(log_r, dim=-1)  # (B, K)
        cond_mean = self.means[None] + a * self.stds[None] ** 2 / var * diff
        return (resp[..., None] * cond_mean).sum(1).to(x_t.dtype)


def gmm_denoiser(mixture: GaussianMixture, schedule: Schedule) -> FunctionDenoiser:
    """A :class:`FunctionDenoiser` predicting the exact E[x0 | x_t] of ``mixture``."""

    def exact_x0(x, t):
        return mixture.posterior_mean(x, schedule.alpha(t), schedule.sigma(t))

    return FunctionDenoiser(exact_x0, schedule=schedule, prediction="x0", shape=(mixture.dim,))


def gaussian_denoiser(mean, std, schedule: Schedule) -> FunctionDenoiser:
    """Exact denoiser of N(mean, diag(std^2))."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    return gmm_denoiser(GaussianMixture(mean[None], torch.as_tensor(std, dtype=torch.float64).expand_as(mean)[None]), schedule)


def prompted_gaussian_denoiser(means: dict, std: float, schedule: Schedule) -> FunctionDenoiser:
    """Exact denoiser of a text-conditional toy: prompt p's data is N(means[p], std^2 I).

    ``prompts=[...]`` works on it as on a text-to-image model (each prompt is its samples' condition),
    and every tilted target has a closed form: under a linear reward ``r(x) = a . x`` at inverse
    temperature lam, prompt p's target is N(means[p] + lam std^2 a, std^2 I).
    """
    names = list(means)
    table = torch.stack([torch.as_tensor(means[name], dtype=torch.float64) for name in names])  # (P, D)
    var0 = float(std) ** 2

    def exact_x0(x, t, cond):
        labels = cond["cond"] if isinstance(cond, dict) else cond
        mu = table[labels.long().cpu()].to(x.device)  # (B, D): each row its own prompt's mean
        a = torch.as_tensor(schedule.alpha(t), dtype=torch.float64).reshape(-1, 1)
        s = torch.as_tensor(schedule.sigma(t), dtype=torch.float64).reshape(-1, 1)
        gain = a * var0 / (a**2 * var0 + s**2)
        return mu + gain * (x.to(torch.float64) - a * mu)

    def encode(prompt):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        unknown = [p for p in prompts if p not in names]
        if unknown:
            raise DiffalignError(f"unknown prompt {unknown[0]!r}; this oracle knows {', '.join(map(repr, names))}")
        return torch.tensor([names.index(p) for p in prompts])

    return FunctionDenoiser(exact_x0, schedule=schedule, prediction="x0", shape=(table.shape[1],),
                            condition_encoder=encode)
