import pytest
import torch

from diffalign.errors import DiffalignError
from diffalign.rewards import WeightedSum, get


def brightness(x):
    return x.mean(dim=(1, 2, 3))


brightness.differentiable = True


def test_equals_manual_weighted_sum():
    digit = get("digit", target=3)
    images = torch.rand(5, 1, 8, 8)
    total = get("weighted-sum", rewards=[digit, "compressibility", brightness], weights=[0.5, -2.0, 1.5])
    assert isinstance(total, WeightedSum)
    expected = 0.5 * digit(images) - 2.0 * get("compressibility")(images) + 1.5 * brightness(images)
    torch.testing.assert_close(total(images), expected)
    assert total(images).shape == (5,)
    assert not total.differentiable  # compressibility is not


def test_differentiable_iff_all_terms_are():
    total = WeightedSum(rewards=[get("digit", target=1), brightness], weights=[1.0, 2.0])
    assert total.differentiable
    images = torch.rand(2, 1, 8, 8, requires_grad=True)
    total(images).sum().backward()
    assert images.grad.abs().sum() > 0
    assert WeightedSum(rewards=[brightness]).differentiable  # default weight 1


def test_weights_must_match_rewards():
    with pytest.raises(DiffalignError, match="2 rewards but 1 weights"):
        get("weighted-sum", rewards=["compressibility", brightness], weights=[1.0])
    with pytest.raises(DiffalignError, match="non-empty list"):
        get("weighted-sum", rewards=[])
    with pytest.raises(DiffalignError, match="finite numbers"):
        get("weighted-sum", rewards=["compressibility"], weights=["a lot"])
    with pytest.raises(DiffalignError, match="cannot use 3 as a reward"):
        get("weighted-sum", rewards=[3], weights=[1.0])
