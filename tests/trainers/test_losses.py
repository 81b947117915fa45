"""The trainers' maths against hand-computed values."""

import math

import pytest
import torch

from diffalign.errors import DiffalignError
from diffalign.trainers import losses


def test_dpo_with_policy_equal_to_reference_is_log_2():
    e = torch.tensor([0.3, 1.2, 0.01])
    out = losses.dpo_loss(e, e.flip(0), e, e.flip(0), beta=500.0)
    torch.testing.assert_close(out.loss, torch.full((3,), math.log(2.0)))
    assert torch.all(out.margin == 0)


def test_dpo_hand_computed_value():
    # policy improved the winner by 0.5 and worsened the loser by 0.5: margin = -(2/2)(-0.5 - 0.5) = 1
    out = losses.dpo_loss(torch.tensor([0.5]), torch.tensor([1.5]), torch.tensor([1.0]), torch.tensor([1.0]), beta=2.0)
    torch.testing.assert_close(out.margin, torch.tensor([1.0]))
    torch.testing.assert_close(out.loss, torch.tensor([math.log(1 + math.exp(-1.0))]))


def test_dpo_per_pair_beta_and_timestep_beta():
    t = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(losses.timestep_beta(100.0, t), torch.tensor([100.0, 25.0, 0.0]))
    out = losses.dpo_loss(torch.zeros(3), torch.ones(3), torch.ones(3), torch.ones(3), losses.timestep_beta(2.0, t))
    torch.testing.assert_close(out.margin, torch.tensor([1.0, 0.25, 0.0]))


@pytest.mark.parametrize("kind", ["eps", "x0", "v", "flow"])
@pytest.mark.parametrize("schedule_name", ["vp", "flow"])
def test_timestep_beta_is_diffusion_dpo_rewritten_for_the_networks_target(kind, schedule_name):
    """beta_t ||y - y_theta||^2 = beta ||eps - eps_theta||^2 for every prediction kind y and schedule.
    Failed before: timestep_beta took no prediction kind and applied (1 - t)^2 to every model."""
    import diffalign as da

    schedule = da.VPSchedule.linear(1e-4, 0.02, 1000) if schedule_name == "vp" else da.FlowSchedule()
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    x0, eps = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    x = schedule.add_noise(x0, eps, t)
    target = da.Prediction(x=x, t=t, x0=x0, eps=eps, schedule=schedule).as_kind(kind)
    delta = torch.randn(3, 4, generator=g, dtype=torch.float64)
    wrong = da.Prediction.from_output(kind, target + delta, x, t, schedule)
    ratio = (wrong.eps - eps).square().sum(1) / delta.square().sum(1)
    torch.testing.assert_close(losses.timestep_beta(1.0, t, kind, schedule).double(), ratio, rtol=1e-5, atol=0)


def test_timestep_beta_of_an_eps_model_is_the_constant_beta():
    import diffalign as da

    t = torch.tensor([0.9])
    torch.testing.assert_close(losses.timestep_beta(100.0, t, "eps", da.VPSchedule.linear(1e-4, 0.02, 1000)), torch.tensor([100.0]))
    with pytest.raises(DiffalignError, match="prediction"):
        losses.timestep_beta(1.0, t, "score")


def test_ppo_clip_cases():
    c = 0.2
    old = torch.zeros(4)
    # ratios 1.5 (A>0: clipped to 1.2), 0.5 (A<0: clipped to 0.8), 1.1 (inside), 0.5 (A>0: unclipped, pessimistic)
    log_prob = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.5])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 2.0, 1.0])
    out = losses.ppo_clip_loss(log_prob, old, adv, c)
    expected = torch.tensor([-1.2, 0.8, -2.2, -0.5]).mean()
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    # clipped terms carry no gradient, unclipped ones d(-A r)/d lp = -A r / n
    torch.testing.assert_close(log_prob.grad, torch.tensor([0.0, 0.0, -2.2 / 4, -0.5 / 4]))
    torch.testing.assert_close(out.clipped_fraction, torch.tensor(0.75))


def test_ppo_on_policy_ratio_is_one_and_loss_is_minus_mean_advantage():
    lp = torch.randn(5, dtype=torch.float64)
    adv = torch.randn(5)
    out = losses.ppo_clip_loss(lp, lp.clone(), adv, 1e-4)
    assert torch.all(out.ratio == 1)
    torch.testing.assert_close(out.loss, -adv.double().mean())


def test_group_advantages():
    r = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    a = losses.group_advantages(r, 3, eps=0.0 + 1e-12)
    # population std (ddof = 0, Flow-GRPO's np.std): sqrt(2/3); failed before with ddof = 1 (std 1)
    torch.testing.assert_close(a[:3], torch.tensor([-1.0, 0.0, 1.0]) * math.sqrt(1.5))
    torch.testing.assert_close(a[3:], torch.zeros(3))  # no preference inside a tied group
    with pytest.raises(DiffalignError, match="group_size"):
        losses.group_advantages(r, 4)


def test_rwr_weights():
    r = torch.tensor([0.0, -1.0, math.log(2.0), 0.0])
    # exp(r / tau) divided by the largest, exp(max r / tau) = 2
    torch.testing.assert_close(losses.rwr_weights(r, 1.0), torch.tensor([1.0, math.exp(-1.0), 2.0, 1.0]) / 2)
    torch.testing.assert_close(losses.rwr_weights(r, 2.0), ((r - r.max()) / 2).exp())
    w = losses.rwr_weights(r, 1.0, "group-softmax", group_size=2)
    torch.testing.assert_close(w.view(2, 2).sum(1), torch.full((2,), 2.0))
    torch.testing.assert_close(w[:2], 2 * torch.softmax(r[:2], 0))
    with pytest.raises(DiffalignError, match="valid choices: exp, group-softmax"):
        losses.rwr_weights(r, 1.0, "softmax")


def test_rwr_exp_weights_never_overflow_and_ignore_a_reward_shift():
    """Failed before: exp(r / tau) gave inf for rewards near 90, so the loss was inf, and every weight
    (hence the step) grew as exp(mean r / tau)."""
    w = losses.rwr_weights(torch.tensor([90.0, 91.0]), 1.0)
    torch.testing.assert_close(w, torch.tensor([math.exp(-1.0), 1.0]))
    r = torch.tensor([0.3, -2.0, 1.5, 0.0])
    torch.testing.assert_close(losses.rwr_weights(r + 500.0, 0.5), losses.rwr_weights(r, 0.5))
    assert torch.isfinite(losses.weighted_regression_loss(torch.ones(2), losses.rwr_weights(torch.tensor([1e4, 2e4]), 1.0)))


def test_weighted_regression_loss_treats_weights_as_constants():
    errors = torch.tensor([1.0, 2.0], requires_grad=True)
    weights = torch.tensor([0.5, 3.0], requires_grad=True)
    loss = losses.weighted_regression_loss(errors, weights)
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(3.25))
    assert weights.grad is None


def test_gaussian_kl_matches_torch():
    mean, ref = torch.randn(3, 2, 2), torch.randn(3, 2, 2)
    std = torch.full((3, 1, 1), 0.3)
    p = torch.distributions.Normal(mean.double(), std.double().expand_as(mean))
    q = torch.distributions.Normal(ref.double(), std.double().expand_as(mean))
    expected = torch.distributions.kl_divergence(p, q).flatten(1).mean(1)
    torch.testing.assert_close(losses.gaussian_kl(mean, ref, std), expected)
