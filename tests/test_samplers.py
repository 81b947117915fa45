import pytest
import torch

import diffalign as da
from diffalign.oracles import gaussian_denoiser

SCHEDULE = da.VPSchedule.linear(1e-4, 0.02, 1000)


def linear_reward(x):
    return x[:, 0]


@pytest.fixture
def model():
    return gaussian_denoiser([0.0, 0.0], [1.0, 1.0], SCHEDULE)


def test_registry_names_and_errors():
    assert {"ancestral", "best-of-n"} <= set(da.samplers.names())
    with pytest.raises(da.DiffalignError, match="valid choices: .*ancestral.*best-of-n"):
        da.samplers.get("nope")


def test_ancestral_nfe_and_determinism(model):
    out = da.sample(model, linear_reward, sampler="ancestral", num_samples=10, nfe=1000, steps=20, seed=1)
    assert out.samples.shape == (10, 2) and out.rewards.shape == (10,)
    assert out.nfe == 200
    again = da.sample(model, linear_reward, sampler="ancestral", num_samples=10, nfe=1000, steps=20, seed=1)
    torch.testing.assert_close(out.samples, again.samples)
    other = da.sample(model, linear_reward, sampler="ancestral", num_samples=10, steps=20, seed=2)
    assert not torch.allclose(out.samples, other.samples)


def test_batching_does_not_change_samples(model):
    small = da.samplers.get("ancestral", batch_size=3).sample(model, None, num_samples=10, steps=5, seed=0)
    large = da.samplers.get("ancestral", batch_size=100).sample(model, None, num_samples=10, steps=5, seed=0)
    assert small.rewards is None
    assert small.samples.shape == large.samples.shape


@pytest.mark.parametrize("nfe", [1000, 1999, 5000])
def test_best_of_n_spends_within_budget(model, nfe):
    out = da.sample(model, linear_reward, sampler="best-of-n", num_samples=5, nfe=nfe, steps=10, seed=0)
    n = nfe // 50
    assert out.info["n"] == n
    assert out.nfe == 5 * n * 10 <= nfe
    # the chosen sample is the best of its candidates
    torch.testing.assert_close(out.rewards, out.info["candidate_rewards"].max(1).values)


def test_best_of_n_improves_reward(model):
    base = da.sample(model, linear_reward, num_samples=200, steps=10, seed=0)
    best = da.sample(model, linear_reward, sampler="best-of-n", num_samples=200, nfe=200 * 10 * 8, steps=10, seed=0)
    # E[max of 8 standard normals] ~ 1.42
    assert best.rewards.mean() > base.rewards.mean() + 1.0


def test_best_of_n_ignores_nan(model):
    def flaky(x):
        r = x[:, 0].clone()
        r[::2] = float("nan")
        return r

    out = da.sample(model, flaky, sampler="best-of-n", num_samples=4, nfe=4 * 4 * 5, steps=5, seed=0)
    assert torch.isfinite(out.rewards).all()


def test_impossible_budget_is_a_clear_error(model):
    with pytest.raises(da.DiffalignError, match="nfe=10 is too small for best-of-n"):
        da.sample(model, linear_reward, sampler="best-of-n", num_samples=4, nfe=10, steps=5)
    with pytest.raises(da.DiffalignError, match="too small for ancestral"):
        da.sample(model, None, sampler="ancestral", num_samples=4, nfe=10, steps=5)
    for bad in [0, -5, 2.5, True]:
        with pytest.raises(da.DiffalignError, match="nfe must be a positive integer"):
            da.sample(model, None, num_samples=1, nfe=bad, steps=5)
    with pytest.raises(da.DiffalignError, match="needs a reward"):
        da.sample(model, None, sampler="best-of-n", num_samples=1, nfe=100, steps=5)


def test_nfe_counter_enforces_budget(model):
    counter = da.NFECounter(model, budget=10)
    counter.predict(torch.zeros(6, 2), 0.5)
    assert counter.count == 6
    with pytest.raises(da.BudgetExceeded):
        counter.predict(torch.zeros(6, 2), 0.5)
    assert counter.count == 6


def test_cfg_counts_two_passes_and_combines():
    schedule = da.FlowSchedule()

    def fn(x, t, cond=None):
        return x * 0 + (0.0 if cond is None else cond["cond"].double()[:, None])

    class Null(da.FunctionDenoiser):
        def null_condition(self, batch_size):
            return {"cond": torch.zeros(batch_size)}

    base = Null(fn, schedule=schedule, prediction="x0", shape=(2,))
    cfg = da.CFGDenoiser(base, scale=3.0)
    counter = da.NFECounter(cfg)
    pred = counter.predict(torch.zeros(4, 2, dtype=torch.float64), 0.5, {"cond": torch.ones(4)})
    assert counter.count == 8
    # null predicts 0, cond predicts 1: CFG gives 0 + 3 * (1 - 0)
    torch.testing.assert_close(pred.x0, torch.full((4, 2), 3.0, dtype=torch.float64))
    counter.predict(torch.zeros(4, 2, dtype=torch.float64), 0.5, None)
    assert counter.count == 12  # unconditional: one pass


def test_unknown_sampler_option_is_named():
    with pytest.raises(da.DiffalignError, match="unknown option\\(s\\) bogus for sampler 'best-of-n'; valid options: n, kernel"):
        da.samplers.get("best-of-n", bogus=1)
