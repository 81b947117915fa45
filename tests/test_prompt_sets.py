"""Sampling over a prompt set (design.md §3b): k samples per prompt, prompt by prompt, nfe per prompt,
nothing mixed across prompts, each reward sees its own prompt."""

import pytest
import torch

import diffalign as da
from diffalign.errors import DiffalignError
from diffalign.oracles import prompted_gaussian_denoiser
from diffalign.samplers.prompt_groups import plan_units

STD = 0.3
MEANS = {"left": [-2.0], "right": [2.0]}


@pytest.fixture(scope="module")
def oracle():
    return prompted_gaussian_denoiser(MEANS, STD, da.FlowSchedule())


def prompt_length(x, prompts):
    # zero-gradient dependence on x, so gradient samplers accept it too
    return x.flatten(1).sum(1) * 0.0 + torch.tensor([float(len(p)) for p in prompts], dtype=x.dtype)


prompt_length.differentiable = True


def opposite(x, prompts):
    """Favours the *other* prompt's side: 'left' (mean -2) rewards large x, 'right' (mean +2) small x."""
    sign = torch.tensor([1.0 if p == "left" else -1.0 for p in prompts], dtype=x.dtype)
    return sign * x[:, 0]


opposite.differentiable = True

SEARCH_OPTIONS = {
    "ancestral": {}, "best-of-n": {}, "sir": {}, "smc": {"resample_every": 2},
    "dts": {"branch_every": 2}, "dts-star": {"branch_every": 2}, "reno": {"iterations": 2},
}


@pytest.mark.parametrize("sampler", sorted(SEARCH_OPTIONS))
def test_each_reward_sees_its_own_prompt(oracle, sampler):
    prompts = ["left", "right", "left"]  # a repeated prompt is its own group too
    out = da.sample(oracle, prompt_length, sampler=sampler, prompts=prompts, num_samples=2, nfe=120, steps=6,
                    seed=0, **SEARCH_OPTIONS[sampler])
    assert out.prompts == ["left", "left", "right", "right", "left", "left"]
    torch.testing.assert_close(out.rewards.float(), torch.tensor([4.0, 4.0, 5.0, 5.0, 4.0, 4.0]))
    assert out.samples.shape == (6, 1)
    assert out.info["prompts"] == 3 and len(out.info["nfe_per_prompt"]) == 3
    assert out.nfe == sum(out.info["nfe_per_prompt"]) and all(n <= 120 for n in out.info["nfe_per_prompt"])


@pytest.mark.parametrize("sampler", ["sir", "smc", "dts", "dts-star"])
def test_search_never_returns_a_sample_of_the_other_prompt(oracle, sampler):
    # each prompt's reward prefers the other prompt's samples: any mixing of pools would show at once
    out = da.sample(oracle, opposite, sampler=sampler, prompts=["left", "right"], num_samples=8, nfe=600, steps=6,
                    seed=1, **SEARCH_OPTIONS[sampler])
    x = out.samples[:, 0]
    assert (x[:8] < 0).all() and (x[8:] > 0).all(), x


@pytest.mark.parametrize("sampler", ["sir", "smc"])
def test_each_prompt_reaches_its_own_tilted_mean(oracle, sampler):
    # N(mu_p, s^2) tilted by exp(lam * sign_p * x) is N(mu_p + lam s^2 sign_p, s^2): exact per prompt
    lam = 2.0
    out = da.sample(oracle, opposite, sampler=sampler, prompts=["left", "right"], num_samples=2000, nfe=20 * 4000,
                    steps=20, seed=2, lam=lam, **({"resample_every": 4} if sampler == "smc" else {}))
    x = out.samples[:, 0].double()
    for half, (mean, sign) in enumerate([(-2.0, 1.0), (2.0, -1.0)]):
        target = mean + lam * STD**2 * sign
        assert x[half * 2000:(half + 1) * 2000].mean().item() == pytest.approx(target, abs=0.03)
    assert isinstance(out.info["ess"], list) and len(out.info["ess"]) == 2


@pytest.mark.parametrize("sampler", ["ancestral", "best-of-n", "sir", "smc"])
def test_shared_calls_give_each_prompt_its_one_prompt_result(oracle, sampler):
    """Seeding rule: prompt i of a call with seed s = a one-prompt call with seed s + i, bit for bit
    (the oracle's rows do not depend on their batch mates), even with small, packed model calls."""
    options = {"batch_size": 7, **({"resample_every": 2} if sampler == "smc" else {})}
    prompts = ["right", "left", "right"]
    together = da.sample(oracle, opposite, sampler=sampler, prompts=prompts, num_samples=3, nfe=90, steps=5,
                         seed=10, **options)
    assert together.info["prompt_batching"] == "shared calls"
    for i, prompt in enumerate(prompts):
        alone = da.sample(oracle, opposite, sampler=sampler, prompts=[prompt], num_samples=3, nfe=90, steps=5,
                          seed=10 + i, **options)
        assert torch.equal(together.samples[3 * i:3 * i + 3], alone.samples), (sampler, i)
        assert torch.equal(together.rewards[3 * i:3 * i + 3], alone.rewards)


def test_one_prompt_set_call_equals_the_cond_call(oracle):
    by_prompt = da.sample(oracle, opposite, sampler="smc", prompts=["left"], num_samples=4, nfe=200, steps=5, seed=3)
    by_cond = da.sample(oracle, lambda x: x[:, 0], sampler="smc", cond="left", num_samples=4, nfe=200, steps=5, seed=3)
    assert torch.equal(by_prompt.samples, by_cond.samples)


def test_budget_is_per_prompt(oracle):
    out = da.sample(oracle, opposite, sampler="sir", prompts=["left", "right", "left", "right"], num_samples=2,
                    nfe=100, steps=10, seed=0)
    assert out.info["rollouts"] == 10 and out.nfe == 400
    assert out.info["nfe_per_prompt"] == [100] * 4 and out.info["nfe_budget_per_prompt"] == 100


def test_model_calls_are_shared_across_prompts(oracle):
    calls = []
    counted = da.FunctionDenoiser(lambda x, t, c: (calls.append(len(x)), oracle.fn(x, t, c))[1], da.FlowSchedule(),
                                  prediction="x0", shape=(1,), condition_encoder=oracle._condition_encoder)
    da.sample(counted, opposite, sampler="best-of-n", prompts=["left", "right"] * 8, num_samples=1, nfe=20,
              steps=5, seed=0)
    assert calls == [16 * 4] * 5  # 16 prompts x 4 candidates in each of the 5 calls, not 16 calls of 4


def test_plan_units_packs_groups_and_keeps_each_groups_chunks():
    calls = plan_units([3, 10, 2], batch_size=4)
    sizes = [[(u.group, u.size) for u in call] for call in calls]
    assert sizes == [[(0, 3)], [(1, 4)], [(1, 4)], [(1, 2), (2, 2)]]


def test_guidance_sees_each_prompt(oracle):
    seen = []

    def reward(x, prompts):
        seen.extend(prompts)
        return opposite(x, prompts)

    reward.differentiable = True
    guided = da.RewardGuidance(oracle, reward, scale=0.5)
    out = da.sample(guided, opposite, sampler="best-of-n", prompts=["left", "right"], num_samples=2, nfe=80, steps=5)
    assert out.info["prompt_batching"] == "one prompt at a time"
    assert set(seen) == {"left", "right"}
    torch.testing.assert_close(out.rewards, opposite(out.samples, out.prompts))


def test_prompts_and_cond_are_exclusive_and_bad_prompts_are_named(oracle):
    with pytest.raises(DiffalignError, match="either cond or prompts"):
        da.sample(oracle, opposite, sampler="sir", prompts=["left"], cond="left", nfe=100, steps=5)
    with pytest.raises(DiffalignError, match=r"prompts\[1\] must be a non-empty string"):
        da.sample(oracle, opposite, sampler="sir", prompts=["left", " "], nfe=100, steps=5)
    with pytest.raises(DiffalignError, match="unknown prompt 'up'"):
        da.sample(oracle, opposite, sampler="sir", prompts=["up"], nfe=100, steps=5)
    with pytest.raises(DiffalignError, match="one entry per prompt"):
        da.sample(oracle, opposite, sampler="sir", prompts=["left"], metadata=[{}, {}], nfe=100, steps=5)


def test_metadata_reaches_the_reward(oracle):
    def from_metadata(x, prompts, metadata):
        return torch.tensor([float(m["bonus"]) for m in metadata])

    out = da.sample(oracle, from_metadata, sampler="best-of-n", prompts=["left", "right"],
                    metadata=[{"bonus": 1}, {"bonus": 7}], num_samples=2, nfe=20, steps=5)
    assert out.rewards.tolist() == [1.0, 1.0, 7.0, 7.0]
    assert out.metadata == [{"bonus": 1}] * 2 + [{"bonus": 7}] * 2


def test_class_label_model_takes_label_prompts():
    model = da.load_model("digits")
    out = da.sample(model, sampler="ancestral", prompts=["3", "7"], num_samples=2, steps=4, seed=0)
    assert out.samples.shape[0] == 4 and out.prompts == ["3", "3", "7", "7"]
    with pytest.raises(DiffalignError, match="class labels 0..9, not on text.*'a cat'"):
        da.sample(model, sampler="ancestral", prompts=["a cat"], steps=4)


def test_best_of_n_never_picks_a_broken_reward_and_all_broken_warns(oracle):
    def broken(x, prompts):
        values = x[:, 0].clone()
        values[::2] = float("inf")  # +inf is a broken reward, not an infinitely good one
        return values

    out = da.sample(oracle, broken, sampler="best-of-n", prompts=["left"], num_samples=2, n=4, steps=3, seed=0)
    assert torch.isfinite(out.rewards).all()
    with pytest.warns(da.SamplingWarning, match="every returned sample's reward is NaN or infinite"):
        da.sample(oracle, lambda x: torch.full((len(x),), float("nan")), sampler="dts-star", cond="left", nfe=60,
                  steps=3, branch_every=1)
