import pytest
import torch

from diffalign.errors import DiffalignError
from diffalign.rewards import CallableReward, JpegCompressibility, Reward, as_reward, get, names

ALL = ["compressibility", "incompressibility", "digit", "clip", "aesthetic", "weighted-sum"]


def test_names_lists_every_reward():
    assert set(ALL) <= set(names())
    assert names() == sorted(names())


def test_unknown_name_lists_valid_names():
    with pytest.raises(DiffalignError) as info:
        get("no-such-reward")
    message = str(info.value)
    assert "no-such-reward" in message
    for name in ALL:
        assert name in message


def test_unknown_and_missing_options_are_named():
    with pytest.raises(DiffalignError, match="targte.*valid options: target, classifier_dir"):
        get("digit", targte=3)
    with pytest.raises(DiffalignError, match="needs option.*path"):
        get("noisy-reward")
    with pytest.raises(DiffalignError, match="needs option.*rewards"):
        get("weighted-sum")


def test_as_reward_passes_rewards_through_and_builds_names():
    reward = JpegCompressibility()
    assert as_reward(reward) is reward
    built = as_reward("incompressibility")
    assert isinstance(built, Reward) and built.name == "incompressibility"


def test_as_reward_wraps_callables():
    def mean_brightness(x):
        return x.mean(dim=(1, 2, 3))

    wrapped = as_reward(mean_brightness)
    assert isinstance(wrapped, CallableReward) and not wrapped.differentiable
    images = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(wrapped(images), images.mean(dim=(1, 2, 3)))

    mean_brightness.differentiable = True
    assert as_reward(mean_brightness).differentiable

    as_list = as_reward(lambda x: [1.0] * x.shape[0])
    assert as_list(images).dtype == torch.float32 and as_list(images).shape == (3,)


@pytest.mark.parametrize("bad", [5, None, [1.0], JpegCompressibility])
def test_as_reward_rejects_other_values(bad):
    with pytest.raises(DiffalignError, match="cannot use .* as a reward"):
        as_reward(bad)


def test_reward_checks_input_and_output_shapes():
    wrong = as_reward(lambda x: x.mean(dim=(2, 3)))  # (B, C), not (B,)
    with pytest.raises(DiffalignError, match=r"expected a tensor of shape \(2,\)"):
        wrong(torch.rand(2, 3, 8, 8))
    with pytest.raises(DiffalignError, match="expects float images of shape"):
        JpegCompressibility()(torch.rand(8, 8))
    with pytest.raises(DiffalignError, match="expects a float NCHW image tensor"):
        JpegCompressibility()([[0.0]])


def test_train_keeps_rewards_in_eval_mode():
    reward = JpegCompressibility().train()
    assert not reward.training
