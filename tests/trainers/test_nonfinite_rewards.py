"""Non-finite rewards are dropped from their groups (issue 22, runs and files 2).

Failed before: one NaN (or +inf) reward made its whole group's advantages NaN, RWR's weights NaN/inf,
and DPO's argmax picked the NaN sample as the winner.
"""

import math

import pytest
import torch

from diffalign.trainers import losses
from diffalign.trainers.losses import NonFiniteRewardWarning

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_group_advantages_drop_a_non_finite_reward_from_its_group(bad):
    r = torch.tensor([1.0, bad, 2.0, 3.0, 0.0, 1.0, 2.0, 5.0])
    with pytest.warns(NonFiniteRewardWarning, match="1 of 8 rewards"):
        a = losses.group_advantages(r, 4)
    assert torch.isfinite(a).all() and a[1] == 0
    torch.testing.assert_close(a[[0, 2, 3]], losses.group_advantages(torch.tensor([1.0, 2.0, 3.0]), 3))
    torch.testing.assert_close(a[4:], losses.group_advantages(r[4:], 4))  # the other group is untouched


def test_a_group_with_fewer_than_two_finite_rewards_carries_no_preference():
    with pytest.warns(NonFiniteRewardWarning):
        a = losses.group_advantages(torch.tensor([NAN, 1.0, NAN, NAN]), 4)
    assert torch.equal(a, torch.zeros(4))


def test_a_quarter_nan_batch_gives_finite_advantages():
    r = torch.randn(32)
    r[::4] = NAN
    with pytest.warns(NonFiniteRewardWarning, match="8 of 32"):
        a = losses.group_advantages(r, 8)
    assert torch.isfinite(a).all() and torch.all(a[::4] == 0)


@pytest.mark.parametrize("mode", ["exp", "group-softmax"])
def test_rwr_weights_are_zero_for_non_finite_rewards(mode):
    r = torch.tensor([0.5, NAN, 1.0, INF, 0.0, 1.0])
    with pytest.warns(NonFiniteRewardWarning, match="2 of 6"):
        w = losses.rwr_weights(r, 1.0, mode, group_size=3)
    assert torch.isfinite(w).all() and w[1] == 0 and w[3] == 0
    if mode == "exp":  # the maximum is over the finite rewards: the best finite sample weighs 1
        torch.testing.assert_close(w[[0, 2, 4, 5]], torch.tensor([math.exp(-0.5), 1.0, math.exp(-1.0), 1.0]))
    else:  # each group's finite weights average to 1
        torch.testing.assert_close(w[:3].sum(), torch.tensor(2.0))
        torch.testing.assert_close(w[3:].sum(), torch.tensor(2.0))


def test_dpo_pairs_never_pick_a_non_finite_sample():
    r = torch.tensor([[0.1, NAN, 0.3, -0.2], [INF, 0.5, 0.2, 0.0], [NAN, 1.0, NAN, NAN], [2.0, 2.0, 2.0, 2.0]])
    with pytest.warns(NonFiniteRewardWarning):
        best, worst, valid = losses.preference_pairs(r)
    assert best.tolist()[:2] == [2, 1] and worst.tolist()[:2] == [3, 3]
    assert valid.tolist() == [True, True, False, False]  # one finite reward, or all tied: no pair


def test_finite_rewards_do_not_warn(recwarn):
    losses.group_advantages(torch.randn(8), 4)
    losses.rwr_weights(torch.randn(8), 1.0)
    assert not [w for w in recwarn if issubclass(w.category, NonFiniteRewardWarning)]


@pytest.mark.parametrize("method,bad", [("grpo", NAN), ("rwr", NAN), ("rwr", INF), ("flow_dpo", NAN), ("grpo", INF)])
def test_training_on_a_partly_non_finite_reward_keeps_finite_weights(tiny_config, tmp_path, method, bad):
    """Failed before: a reward NaN for a quarter of the samples (or +inf) saved a 100%-NaN LoRA with exit 0."""
    from diffalign.trainers import get_trainer

    trainer = get_trainer(method)(tiny_config(method, train={"max_steps": 2}), tmp_path)
    reward = trainer.reward

    def poisoned(images):
        r = reward(images).clone()
        r[::4] = bad
        return r

    trainer.reward = poisoned
    with pytest.warns(NonFiniteRewardWarning):
        trainer.train()
    state = trainer.trainable_state()
    assert all(torch.isfinite(v).all() for v in state.values())
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)  # it did train
