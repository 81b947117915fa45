"""ReNO: the regulariser by hand, reward rising over iterations, NFE accounting, clear errors."""

import math

import pytest
import torch

import diffalign as da
from diffalign.noise_space import chi_norm_regularizer
from diffalign.samplers.reno import reno_cost


@pytest.fixture(scope="module")
def model():
    return da.load_model("digits-flow")


@pytest.fixture(scope="module")
def reward():
    return da.rewards.get("digit", target=3)


def test_chi_norm_regularizer_hand_values():
    z = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # d = 2: ||z||^2 / 2 - 1 * log ||z||
    torch.testing.assert_close(chi_norm_regularizer(z), torch.tensor([12.5 - math.log(5.0), 0.5], dtype=torch.float64))
    # its minimum over the norm is at sqrt(d - 1): for d = 65 at 8
    norms = torch.tensor([7.0, 8.0, 9.0])
    values = chi_norm_regularizer(torch.nn.functional.pad(norms[:, None], (0, 64)))
    assert values.argmin() == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chi_norm_regularizer_is_exact_in_half_precision(dtype):
    """Failed before (computed in z's dtype): bf16 lost the whole gradient at d = 4096, and fp16's
    ||z||^2 overflowed at d = 65,536 (a 4x128x128 latent), making the value infinite."""
    for d in (4096, 65536):
        z = torch.randn(2, d, generator=torch.Generator().manual_seed(0)).to(dtype).requires_grad_(True)
        z64 = z.detach().double().requires_grad_(True)
        value = chi_norm_regularizer(z)
        expected = chi_norm_regularizer(z64)
        assert torch.isfinite(value).all()
        torch.testing.assert_close(value, expected.detach(), rtol=1e-6, atol=1e-6)
        (grad,) = torch.autograd.grad(value.sum(), z)
        (grad64,) = torch.autograd.grad(expected.sum(), z64)
        # the gradient z (1 - (d - 1) / ||z||^2) is small against z; only its rounding to z's dtype remains
        error = (grad.double() - grad64).norm() / grad64.norm()
        assert error < 0.02, error


def test_reno_iterations_count_evaluated_iterates_as_the_reference_does(model, reward):
    """ReNO's reference runs n_iters iterations and steps after all but the last. Failed before:
    iterations=3 evaluated 4 iterates (3 steps)."""
    calls = []

    def counting(images):
        calls.append(len(images))
        return reward(images)

    counting.differentiable = True
    out = da.sample(model, counting, sampler="reno", num_samples=2, steps=1, seed=0, iterations=3, progress=False)
    assert len(calls) == 3 and len(out.info["reward_trace"]) == 3
    assert out.nfe == 2 * (2 * 2 + 1)  # 2 steps x (forward + backward) + the last forward, 1 pass each


def test_reno_raises_the_reward_as_iterations_go_on(model, reward):
    out = da.sample(model, reward, sampler="reno", num_samples=6, steps=1, seed=0, iterations=7, progress=False)
    trace = out.info["reward_trace"]
    assert len(trace) == 7
    assert trace[-1] > trace[0] + 1.0
    assert sum(trace[4:]) / 3 > sum(trace[:3]) / 3
    # best iterate per sample: never below where it started
    assert torch.all(out.rewards >= out.info["initial_rewards"] - 1e-5)


def test_reno_nfe_counts_forward_and_backward_passes(model, reward):
    out = da.sample(model, reward, sampler="reno", num_samples=3, steps=2, seed=0, iterations=2, progress=False)
    assert out.nfe == 3 * reno_cost(2, 2) == 3 * (2 * 2 - 1) * 2
    with pytest.raises(da.DiffalignError, match="too small for reno"):
        da.sample(model, reward, sampler="reno", num_samples=3, steps=2, nfe=17, iterations=2)
    # CFG doubles every pass (forward and backward)
    guided = da.sample(da.CFGDenoiser(model, 2.0), reward, sampler="reno", num_samples=2, steps=1, cond=3, iterations=2,
                       optimizer="adam", lr=0.1, progress=False)
    assert guided.nfe == 2 * (2 * 2 - 1) * 2


def test_reno_samples_are_independent_of_their_batch(model, reward):
    together = da.sample(model, reward, sampler="reno", num_samples=2, steps=1, seed=4, iterations=2, progress=False)
    alone = da.sample(model, reward, sampler="reno", num_samples=2, steps=1, seed=4, iterations=2, progress=False, batch_size=1)
    torch.testing.assert_close(together.samples, alone.samples, rtol=1e-4, atol=1e-4)


def test_reno_is_deterministic_by_seed(model, reward):
    a = da.sample(model, reward, sampler="reno", num_samples=2, steps=1, seed=1, iterations=1, progress=False)
    b = da.sample(model, reward, sampler="reno", num_samples=2, steps=1, seed=1, iterations=1, progress=False)
    assert torch.equal(a.samples, b.samples)


def test_non_differentiable_rewards_are_clear_errors(model):
    with pytest.raises(da.DiffalignError, match="reno needs a differentiable reward, but 'compressibility' is not"):
        da.sample(model, "compressibility", sampler="reno", num_samples=1, steps=1, iterations=1)
    detached = lambda images: images.detach().mean(dim=(1, 2, 3))  # noqa: E731
    with pytest.raises(da.DiffalignError, match="no gradient"):
        da.sample(model, detached, sampler="reno", num_samples=1, steps=1, iterations=1)
    with pytest.raises(da.DiffalignError, match="deterministic kernel"):
        da.sample(model, da.rewards.get("digit", target=1), sampler="reno", num_samples=1, steps=1, kernel="flow-sde")
    with pytest.raises(da.DiffalignError, match="unknown optimizer 'lbfgs'; valid choices: adam, sgd"):
        da.samplers.get("reno", optimizer="lbfgs")
