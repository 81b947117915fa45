"""Kernels against analytic answers: exact Gaussian denoisers must reproduce the data distribution."""

import pytest
import torch

import diffalign as da
from diffalign.oracles import GaussianMixture, gaussian_denoiser, gmm_denoiser
from diffalign.samplers.rollout import rollout

MEAN = torch.tensor([1.5, -0.5], dtype=torch.float64)
STD = torch.tensor([0.5, 2.0], dtype=torch.float64)


def _sample(model, kernel, steps, n=20000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *model.shape, generator=g, dtype=torch.float64)
    return rollout(model, x, model.schedule.time_grid(steps), kernel, None, g)


@pytest.mark.parametrize(
    "schedule,kernel,steps",
    [
        (da.VPSchedule.linear(1e-4, 0.02, 1000), da.DDIM(eta=1.0), 200),
        (da.VPSchedule.linear(1e-4, 0.02, 1000), da.DDIM(eta=0.0), 50),
        (da.FlowSchedule(), da.DDIM(eta=1.0), 200),
        (da.FlowSchedule(), da.Euler(), 200),
        (da.FlowSchedule(), da.FlowSDE(noise_level=0.7), 400),
    ],
    ids=["vp-ddpm", "vp-ddim", "flow-ddim-eta1", "flow-euler", "flow-sde"],
)
def test_exact_gaussian_denoiser_reproduces_data(schedule, kernel, steps):
    model = gaussian_denoiser(MEAN, STD, schedule)
    x0 = _sample(model, kernel, steps)
    # standard error of the mean is std/sqrt(n) ~ 0.014 for the wide coordinate
    torch.testing.assert_close(x0.mean(0), MEAN, atol=0.05, rtol=0)
    torch.testing.assert_close(x0.std(0), STD, atol=0.05, rtol=0.03)


def test_prediction_kinds_give_identical_sampling():
    """The same exact denoiser expressed as x0, eps, v or flow gives the same trajectory."""
    schedule = da.VPSchedule.linear(1e-4, 0.02, 1000)
    base = gaussian_denoiser(MEAN, STD, schedule)
    outs = []
    for kind in da.models.PREDICTION_KINDS:
        fn = lambda x, t, kind=kind: base.predict(x, t).as_kind(kind)
        model = da.FunctionDenoiser(fn, schedule=schedule, prediction=kind, shape=(2,))
        outs.append(_sample(model, da.DDIM(eta=1.0), 20, n=64, seed=3))
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0])


def test_mixture_modes_are_recovered():
    angles = torch.arange(4) * torch.pi / 2
    means = 3 * torch.stack([angles.cos(), angles.sin()], 1)
    mixture = GaussianMixture(means, 0.3, weights=torch.tensor([0.1, 0.2, 0.3, 0.4]))
    model = gmm_denoiser(mixture, da.VPSchedule.linear(1e-3, 0.07, 100))
    x0 = _sample(model, da.DDIM(eta=1.0), 100, n=20000)
    nearest = torch.cdist(x0, mixture.means).argmin(1)
    occupancy = torch.bincount(nearest, minlength=4).double() / len(x0)
    torch.testing.assert_close(occupancy, mixture.weights, atol=0.02, rtol=0)


def test_gaussian_step_log_prob_matches_torch():
    mean, std = torch.randn(3, 2, 2), torch.full((3, 1, 1), 0.7)
    step = da.GaussianStep(mean, std)
    x = step.sample(torch.randn(3, 2, 2))
    expected = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(step.log_prob(x), expected.double())  # log-probs are float64


def test_ddim_eta1_is_ddpm_posterior():
    """DDIM(eta=1) variance equals beta_tilde of Ho et al. eq. (7)."""
    schedule = da.VPSchedule.linear(1e-4, 0.02, 1000)
    t, t_next = torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.499], dtype=torch.float64)
    x = torch.randn(1, 2, dtype=torch.float64)
    pred = da.Prediction(x, t, torch.zeros_like(x), x / schedule.sigma(t), schedule)
    step = da.DDIM(eta=1.0)(pred, t_next)
    abar, abar_next = schedule.alpha(t) ** 2, schedule.alpha(t_next) ** 2
    beta_tilde = (1 - abar_next) / (1 - abar) * (1 - abar / abar_next)
    torch.testing.assert_close(step.std.flatten() ** 2, beta_tilde)


def test_last_step_returns_x0_hat():
    schedule = da.VPSchedule.linear()
    model = gaussian_denoiser(MEAN, STD, schedule)
    x = torch.randn(8, 2, dtype=torch.float64)
    pred = model.predict(x, 0.01)
    x_last = da.DDIM(eta=1.0).step(pred, 0.0, torch.randn_like(x))
    torch.testing.assert_close(x_last, pred.x0)


def test_unknown_kernel_lists_choices():
    with pytest.raises(da.DiffalignError, match="valid choices: ddim, ddpm, euler, flow-sde"):
        da.kernels.get_kernel("heun")


def test_kernels_with_equal_parameters_are_equal():
    # a forest steps the rows of all trees whose kernels compare equal in one call (samplers/forest.py)
    get = da.kernels.get_kernel
    assert get("ddpm") == get("ddim", eta=1.0) and hash(get("ddpm")) == hash(get("ddim", eta=1.0))
    assert get("ddim", eta=0.5) != get("ddpm") and get("flow-sde") == get("flow-sde") != get("flow-sde", noise_level=0.3)
    assert da.Euler() == da.Euler() != da.DDIM(eta=0.0)

    class Custom(da.Kernel):  # a kernel that does not state its parameters equals only itself
        def __call__(self, pred, t_next):
            return da.DDIM(eta=1.0)(pred, t_next)

    one = Custom()
    assert one == one and one != Custom() and len({one, Custom()}) == 2
