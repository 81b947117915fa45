"""The arithmetic of Diffusion Tree Sampling / Search as pure functions on arrays of child statistics.

Jain et al., "Diffusion Tree Sampling", NeurIPS 2025 (arXiv 2506.20701), §3:

* soft value backup (their eq. (4), the empirical soft Bellman backup)
  v(node) = (1/lambda) log( (1/|C|) sum_{c in C} exp(lambda v(c)) )  -- a log-*mean*-exp over all
  children, unweighted by visit counts; lambda = inf is the max backup used by DTS*;
* Boltzmann selection (DTS): P(child) proportional to exp(lambda v(child));
* UCT selection (DTS*): argmax v(child) + c sqrt(log N(parent) / N(child));
* progressive widening: a node takes a new child while |C| < C_pw N^alpha.

Values may be -inf (a sample whose reward was treated as -inf); every function handles that.
"""

from __future__ import annotations

import math

import numpy as np


def soft_backup(child_values: np.ndarray, lam: float) -> float:
    """(1/lam) log mean exp(lam v); lam = inf gives max(v). All -inf children give -inf."""
    v = np.asarray(child_values, dtype=np.float64)
    top = v.max()
    if math.isinf(lam) or not np.isfinite(top):
        return float(top)
    return float(top + np.log(np.mean(np.exp(lam * (v - top)))) / lam)


def boltzmann_probabilities(child_values: np.ndarray, lam: float) -> np.ndarray:
    """softmax(lam v); lam = inf puts uniform mass on the argmax set. All -inf: uniform."""
    v = np.asarray(child_values, dtype=np.float64)
    top = v.max()
    if not np.isfinite(top):
        return np.full(len(v), 1.0 / len(v))
    if math.isinf(lam):
        best = (v == top).astype(np.float64)
        return best / best.sum()
    w = np.exp(lam * (v - top))
    return w / w.sum()


def uct_scores(child_values: np.ndarray, child_visits: np.ndarray, parent_visits: float, c_uct: float) -> np.ndarray:
    """v(child) + c_uct sqrt(log N(parent) / N(child))."""
    bonus = c_uct * np.sqrt(np.log(max(parent_visits, 1.0)) / np.asarray(child_visits, dtype=np.float64))
    return np.asarray(child_values, dtype=np.float64) + bonus


def may_widen(num_children: int, visits: float, c_pw: float, alpha: float) -> bool:
    """Progressive widening: True while |children| < C N^alpha (a node with no child always widens)."""
    return num_children == 0 or num_children < c_pw * visits**alpha


def sample_index(probabilities: np.ndarray, rng: np.random.Generator) -> int:
    """One draw from a categorical distribution (inverse CDF; much cheaper than ``rng.choice`` with p)."""
    cdf = np.cumsum(probabilities)
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)


def effective_sample_size(weights: np.ndarray) -> float:
    """(sum w)^2 / sum w^2 of non-negative weights (Kong 1992): how many samples they are worth."""
    w = np.asarray(weights, dtype=np.float64)
    return float(w.sum() ** 2 / (w * w).sum()) if w.size and (w * w).sum() > 0 else 0.0


# -- the exact tree (dts.py): allocation of extra children and the weights that keep it unbiased ------------


def allocation_log_probabilities(log_mass, values, lam: float, exploration: float, use_values: bool):
    """log q_i, the share of a level's extra children that node i receives (torch, float64).

    Value-independent (``use_values=False``): q_i proportional to the node's mass w_i. Value-guided:
    q = (1 - eps) softmax(log w + lam v) + eps w / sum(w), so every node keeps q_i >= eps w_i / sum(w) > 0
    and the weights 1 / (M q_i) stay bounded. Nodes of mass 0 get q_i = 0 (and no children).
    """
    import torch

    log_mass = torch.as_tensor(log_mass, dtype=torch.float64)
    base = log_mass - torch.logsumexp(log_mass, 0)
    if not use_values:
        return base
    v = torch.as_tensor(values, dtype=torch.float64)
    logits = torch.where(torch.isfinite(v), log_mass + lam * v, torch.full_like(v, -torch.inf))
    if not torch.isfinite(logits.max()):
        return base
    guided = logits - torch.logsumexp(logits, 0)
    return torch.logaddexp(math.log1p(-exploration) + guided, math.log(exploration) + base)


def systematic_counts(log_q, total: int, u: float):
    """Counts n_i >= 0 with sum n_i = total and E[n_i] = total q_i (systematic sampling, Kitagawa 1996).

    Each n_i is floor or ceil of total q_i, so the expectation holds for every i (given q), which is
    all the tree's unbiasedness needs; the sum is exact, so a level's node count is deterministic.
    """
    import torch

    q = torch.exp(torch.as_tensor(log_q, dtype=torch.float64))
    q = q / q.sum()
    edges = torch.cumsum(q, 0) * total
    edges[-1] = float(total)
    points = u + torch.arange(total, dtype=torch.float64)
    owners = torch.searchsorted(edges, points, right=True).clamp(max=len(q) - 1)
    return torch.bincount(owners, minlength=len(q))
