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
