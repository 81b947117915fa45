"""Log-probs and kernel coefficients stay exact in half precision (what RL importance ratios rely on)."""

import pytest
import torch

import diffalign as da
from diffalign.models.prediction import Prediction


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_log_prob_is_float64_exact_for_half_precision_latents(dtype):
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 16, 64, 64, generator=g)
    std = torch.full((2, 1, 1, 1), 0.05)
    x_next = mean + std * torch.randn(mean.shape, generator=g)
    exact = da.GaussianStep(mean.double(), std.double()).log_prob(x_next.double())
    half = da.GaussianStep(mean.to(dtype), std).log_prob(x_next.to(dtype))
    assert exact.abs().min() > 5e4  # the regime where half-precision sums fail
    assert torch.isfinite(half).all()
    # the only error left is the rounding of the inputs themselves (z ~ 1e-3 relative per element)
    torch.testing.assert_close(half, exact, rtol=2e-3, atol=0)


def test_log_prob_mean_reduction_is_per_element():
    step = da.GaussianStep(torch.zeros(3, 2, 4), torch.full((3, 1, 1), 0.3))
    x = torch.randn(3, 2, 4)
    torch.testing.assert_close(step.log_prob(x, reduction="mean"), step.log_prob(x) / 8)
    with pytest.raises(da.DiffalignError, match="valid choices: sum, mean"):
        step.log_prob(x, reduction="avg")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ddpm_std_is_formed_in_float64(dtype):
    schedule = da.VPSchedule.linear(1e-4, 0.02, 1000)
    t, t_next = torch.full((4,), 0.5), torch.full((4,), 0.49)
    x = torch.randn(4, 1, 8, 8)
    step64 = da.DDIM(1.0)(Prediction.from_output("eps", torch.zeros_like(x).double(), x.double(), t, schedule), t_next)
    x_half = x.to(dtype)
    step = da.DDIM(1.0)(Prediction.from_output("eps", torch.zeros_like(x_half), x_half, t, schedule), t_next)
    torch.testing.assert_close(step.std.double(), step64.std, rtol=1e-9, atol=0)


def test_flow_sde_std_is_formed_in_float64():
    schedule = da.FlowSchedule()
    t, t_next = torch.full((4,), 0.5), torch.full((4,), 0.45)
    x = torch.randn(4, 1, 8, 8)
    kernel = da.FlowSDE(0.7)
    step64 = kernel(Prediction.from_output("flow", torch.zeros_like(x).double(), x.double(), t, schedule), t_next)
    xb = x.to(torch.bfloat16)
    step = kernel(Prediction.from_output("flow", torch.zeros_like(xb), xb, t, schedule), t_next)
    torch.testing.assert_close(step.std.double(), step64.std, rtol=1e-9, atol=0)
    assert step.sample(torch.randn_like(xb)).dtype == torch.bfloat16
