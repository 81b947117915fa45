import pytest
import torch

import diffalign as da
from diffalign.models.prediction import PREDICTION_KINDS, Prediction


SCHEDULES = [da.VPSchedule.linear(1e-4, 0.02, 1000), da.VPSchedule.scaled_linear(), da.FlowSchedule(), da.FlowSchedule(shift=3.0)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_endpoints_and_grid(schedule):
    assert schedule.alpha(0.0).item() == pytest.approx(1.0)
    assert schedule.sigma(0.0).item() == pytest.approx(0.0, abs=1e-12)
    grid = schedule.time_grid(10)
    assert grid.shape == (11,) and grid[-1] == 0.0 and grid[0] == pytest.approx(1.0)
    assert torch.all(grid[1:] < grid[:-1])


def test_vp_matches_diffusers_timesteps():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000)
    schedule = da.VPSchedule.from_scheduler(scheduler)
    for k in [0, 1, 500, 999]:
        t = schedule.time_from_model_timestep(k)
        assert schedule.model_timestep(t).item() == pytest.approx(k)
        assert schedule.alpha(t).item() ** 2 == pytest.approx(scheduler.alphas_cumprod[k].item(), rel=1e-6)
    # VP: alpha^2 + sigma^2 = 1 everywhere, also between grid points
    t = torch.rand(100, dtype=torch.float64)
    torch.testing.assert_close(schedule.alpha(t) ** 2 + schedule.sigma(t) ** 2, torch.ones_like(t))


def test_flow_convention_and_shift_matches_diffusers():
    from diffusers import FlowMatchEulerDiscreteScheduler

    schedule = da.FlowSchedule(shift=3.0)
    t = torch.rand(7, dtype=torch.float64)
    torch.testing.assert_close(schedule.alpha(t), 1 - t)
    torch.testing.assert_close(schedule.sigma(t), t)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    grid = schedule.time_grid_from_scheduler(scheduler, 10)
    torch.testing.assert_close(grid.float(), scheduler.sigmas.float(), atol=1e-5, rtol=1e-5)
    # our own grid applies the same shift to a uniform grid that ends at exactly 0
    u = torch.linspace(1, 0, 11, dtype=torch.float64)
    torch.testing.assert_close(schedule.time_grid(10), 3 * u / (1 + 2 * u))


def test_vp_grid_is_trailing_spacing():
    from diffusers import DDIMScheduler

    schedule = da.VPSchedule.linear(1e-4, 0.02, 1000)
    scheduler = DDIMScheduler(timestep_spacing="trailing")
    torch.testing.assert_close(schedule.time_grid_from_scheduler(scheduler, 10), schedule.time_grid(10))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_derivatives(schedule):
    # between the knots of a discrete schedule (every 1/T), where the derivative is defined
    t = torch.tensor([0.1003, 0.3705, 0.8009], dtype=torch.float64)
    h = 1e-7
    numeric = (schedule.alpha(t + h) - schedule.alpha(t - h)) / (2 * h)
    torch.testing.assert_close(schedule.d_alpha(t), numeric, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
@pytest.mark.parametrize("kind", PREDICTION_KINDS)
def test_prediction_round_trips(schedule, kind):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.5, 0.7, 0.95], dtype=torch.float64)
    x = schedule.add_noise(x0, eps, t)
    truth = Prediction(x, t, x0, eps, schedule)
    again = Prediction.from_output(kind, truth.as_kind(kind), x, t, schedule)
    torch.testing.assert_close(again.x0, x0)
    torch.testing.assert_close(again.eps, eps)
    for other in PREDICTION_KINDS:
        torch.testing.assert_close(again.as_kind(other), truth.as_kind(other))


def test_flow_velocity_is_eps_minus_x0():
    schedule = da.FlowSchedule()
    x0, eps = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64)
    pred = Prediction(schedule.add_noise(x0, eps, t), t, x0, eps, schedule)
    torch.testing.assert_close(pred.flow, eps - x0)


def test_bad_inputs():
    with pytest.raises(da.DiffalignError, match="prediction"):
        da.FunctionDenoiser(lambda x, t: x, schedule=da.FlowSchedule(), prediction="score", shape=(2,))
    with pytest.raises(da.DiffalignError, match="steps"):
        da.FlowSchedule().time_grid(0)
    with pytest.raises(da.DiffalignError):
        da.VPSchedule([0.5, 0.9])


@pytest.mark.parametrize("schedule", SCHEDULES[:2], ids=repr)
def test_vp_derivatives_at_knots_use_the_segment_below(schedule):
    # samplers step downward from grid times k/T, so the slope they need at a knot is the one of the
    # segment below it (the segment above was 20% off at k = 1 on the linear schedule)
    T = schedule.num_train_timesteps
    t = torch.tensor([1, 2, 3, 500, T - 1, T], dtype=torch.float64) / T
    h = 1e-7
    for fn, derivative in [(schedule.alpha, schedule.d_alpha), (schedule.sigma, schedule.d_sigma)]:
        from_below = (fn(t) - fn(t - h)) / h
        torch.testing.assert_close(derivative(t), from_below, rtol=1e-4, atol=0)


def test_eps_prediction_where_alpha_is_zero_is_a_clear_error():
    # rectified flow: alpha(1) = 0, so predicted noise says nothing about x0 at the first grid point
    schedule = da.FlowSchedule()
    x, eps = torch.randn(3, 2), torch.randn(3, 2)
    with pytest.raises(da.DiffalignError, match="prediction='eps'.*t=1, where alpha\\(t\\) = 0"):
        Prediction.from_output("eps", eps, x, torch.tensor([1.0, 0.5, 0.2]), schedule)
    model = da.FunctionDenoiser(lambda x, t: x, schedule=schedule, prediction="eps", shape=(2,))
    with pytest.raises(da.DiffalignError, match="prediction='eps'"):
        da.sample(model, None, num_samples=2, steps=4)


def test_flow_prediction_on_a_flat_vp_stretch_is_a_clear_error():
    # abar constant between steps 2 and 3: the velocity is 0 there whatever x0 is, so x0 cannot be recovered
    schedule = da.VPSchedule([0.9, 0.8, 0.8, 0.5])
    x, velocity = torch.randn(2, 2, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    with pytest.raises(da.DiffalignError, match="prediction='flow'.*t=0.6"):
        Prediction.from_output("flow", velocity, x, torch.tensor([0.6, 0.9], dtype=torch.float64), schedule)
    # outside the flat stretch it still round-trips
    pred = Prediction.from_output("flow", velocity, x, torch.tensor([0.4, 0.9], dtype=torch.float64), schedule)
    torch.testing.assert_close(pred.flow, velocity)


def test_function_denoiser_keeps_the_sample_dtype():
    # a user fn that multiplies by schedule.alpha(t) returns float64; samples must stay float32
    schedule = da.VPSchedule.linear(1e-4, 0.02, 1000)
    model = da.FunctionDenoiser(lambda x, t: schedule.alpha(t)[:, None] * x, schedule=schedule, prediction="x0",
                                shape=(2,))
    pred = model.predict(torch.randn(3, 2), torch.tensor(0.5, dtype=torch.float64))
    assert pred.x0.dtype == pred.eps.dtype == torch.float32
    out = da.sample(model, lambda x: x[:, 0], sampler="sir", num_samples=4, nfe=40, steps=5, seed=0)
    assert out.samples.dtype == torch.float32


@pytest.mark.parametrize("schedule", [da.VPSchedule.scaled_linear(), da.FlowSchedule(shift=3.0)])
def test_alpha_sigma_is_alpha_and_sigma_bit_for_bit(schedule):
    # kernels take both from one call (one abar for a VP schedule); the values must not move by a bit
    t = torch.cat([torch.linspace(0, 1, 1001, dtype=torch.float64), torch.rand(97, dtype=torch.float64)])
    a, s = schedule.alpha_sigma(t)
    assert torch.equal(a, schedule.alpha(t)) and torch.equal(s, schedule.sigma(t))
    a0, s0 = schedule.alpha_sigma(torch.tensor(0.37, dtype=torch.float64))
    assert a0.item() == schedule.alpha(0.37).item() and s0.item() == schedule.sigma(0.37).item()
