import math

import numpy as np
import pytest

from diffalign.samplers import tree_math


def test_soft_backup_is_log_mean_exp():
    v = np.array([0.0, 1.0, 2.0])
    assert tree_math.soft_backup(v, 1.0) == pytest.approx(math.log((1 + math.e + math.e**2) / 3))
    assert tree_math.soft_backup(v, 2.0) == pytest.approx(0.5 * math.log((1 + math.e**2 + math.e**4) / 3))
    assert tree_math.soft_backup(v, math.inf) == 2.0
    # large values do not overflow
    assert tree_math.soft_backup(np.array([1000.0, 1000.0]), 1.0) == pytest.approx(1000.0)


def test_soft_backup_handles_minus_inf():
    assert tree_math.soft_backup(np.array([-np.inf, 0.0]), 1.0) == pytest.approx(math.log(0.5))
    assert tree_math.soft_backup(np.array([-np.inf, -np.inf]), 1.0) == -np.inf


def test_boltzmann_probabilities():
    p = tree_math.boltzmann_probabilities(np.array([0.0, math.log(3.0)]), 1.0)
    np.testing.assert_allclose(p, [0.25, 0.75])
    np.testing.assert_allclose(tree_math.boltzmann_probabilities(np.array([1.0, 3.0, 3.0]), math.inf), [0, 0.5, 0.5])
    np.testing.assert_allclose(tree_math.boltzmann_probabilities(np.array([-np.inf, -np.inf]), 1.0), [0.5, 0.5])
    np.testing.assert_allclose(tree_math.boltzmann_probabilities(np.array([-np.inf, 0.0]), 1.0), [0.0, 1.0])


def test_uct_and_widening():
    scores = tree_math.uct_scores(np.array([0.0, 0.0]), np.array([1.0, 4.0]), 5.0, 2.0)
    assert scores[0] == pytest.approx(2 * math.sqrt(math.log(5)))
    assert scores[1] == pytest.approx(2 * math.sqrt(math.log(5) / 4))
    assert tree_math.may_widen(0, 1.0, 1e-9, 0.5)
    assert tree_math.may_widen(3, 2.0, 2.0, 1.0) and not tree_math.may_widen(4, 2.0, 2.0, 1.0)


def test_sample_index_matches_probabilities():
    rng = np.random.default_rng(0)
    p = np.array([0.1, 0.0, 0.6, 0.3])
    draws = np.bincount([tree_math.sample_index(p, rng) for _ in range(20000)], minlength=4) / 20000
    np.testing.assert_allclose(draws, p, atol=0.015)
    assert draws[1] == 0
