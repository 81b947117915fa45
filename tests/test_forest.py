"""A forest of trees (design.md §3b): trees of several prompts (or several trees of one) share every
model call and nothing else -- each tree's samples, rewards and NFE are exactly its solo run's."""

import time

import pytest
import torch

import diffalign as da
from diffalign.oracles import prompted_gaussian_denoiser

MEANS = {"a": [-2.0, 0.0], "b": [2.0, 1.0], "c": [0.0, -1.5]}


@pytest.fixture(scope="module")
def oracle():
    return prompted_gaussian_denoiser(MEANS, 0.4, da.FlowSchedule())


def reward(x, prompts):
    # a different objective per prompt; -inf on a half-plane, so trees meet -inf rewards too
    sign = torch.tensor([{"a": 1.0, "b": -1.0, "c": 0.5}[p] for p in prompts], dtype=x.dtype)
    value = sign * x[:, 0] - x[:, 1] ** 2
    return torch.where(x[:, 1] > 2.2, torch.full_like(value, -float("inf")), value)


OPTIONS = {"dts": {"branch_every": 2}, "dts-star": {"branch_every": 2}, "dts-paper": {"preset": "paper", "branch_every": 2}}


@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("max_rows", [256, 5])
def test_forest_over_prompts_equals_each_prompts_tree_alone(oracle, name, max_rows):
    sampler, options = ("dts" if name == "dts-paper" else name), OPTIONS[name]
    prompts = ["a", "b", "c", "a"]
    forest = da.sample(oracle, reward, sampler=sampler, prompts=prompts, num_samples=3, nfe=300, steps=6, seed=4,
                       max_rows=max_rows, progress=False, **options)
    assert forest.info["prompt_batching"] == "forest" and forest.info["trees"] == 4
    assert forest.info["rows_per_call"] <= max_rows
    for i, prompt in enumerate(prompts):
        alone = da.sample(oracle, reward, sampler=sampler, prompts=[prompt], num_samples=3, nfe=300, steps=6,
                          seed=4 + i, progress=False, **options)
        assert torch.equal(forest.samples[3 * i:3 * i + 3], alone.samples), (name, i)
        assert torch.equal(forest.rewards[3 * i:3 * i + 3], alone.rewards)
        assert forest.info["nfe_per_prompt"][i] == alone.nfe


def test_forest_shares_model_calls(oracle):
    calls = []
    counted = da.FunctionDenoiser(lambda x, t, c: (calls.append(len(x)), oracle.fn(x, t, c))[1], da.FlowSchedule(),
                                  prediction="x0", shape=(2,), condition_encoder=oracle._condition_encoder)
    out = da.sample(counted, reward, sampler="dts-star", prompts=["a", "b", "c"] * 4, num_samples=1, nfe=200,
                    steps=6, seed=0, branch_every=2, progress=False)
    solo = len(calls) - out.info["model_calls"]
    assert out.info["model_calls"] == len(calls) and solo == 0
    assert out.info["rows_per_call"] > 16  # 12 trees' rows per call, where one tree has at most 16 in flight


def test_trees_per_prompt_split_the_budget_and_keep_the_best(oracle):
    one_cond = da.sample(oracle, lambda x: -x[:, 1] ** 2, sampler="dts-star", cond="a", trees_per_prompt=4, nfe=400,
                         steps=6, seed=1, branch_every=2, num_samples=2, progress=False)
    assert one_cond.info["trees_per_prompt"] == 4 and len(one_cond.info["nfe_per_tree"]) == 4
    assert all(n <= 100 for n in one_cond.info["nfe_per_tree"]) and one_cond.nfe <= 400
    # tree j alone: seed + j, budget nfe // 4; the forest keeps the best 2 of the 4 x 2 outputs
    best = torch.cat([da.sample(oracle, lambda x: -x[:, 1] ** 2, sampler="dts-star", cond="a", nfe=100, steps=6,
                                seed=1 + j, branch_every=2, num_samples=2, progress=False).rewards for j in range(4)])
    torch.testing.assert_close(one_cond.rewards, best.sort(descending=True).values[:2])


def test_exact_dts_forest_pools_trees_by_their_z_estimates(oracle):
    out = da.sample(oracle, reward, sampler="dts", prompts=["a", "b"], trees_per_prompt=3, num_samples=4, nfe=600,
                    steps=6, seed=0, branch_every=2, progress=False)
    assert out.samples.shape == (8, 2) and out.info["trees"] == 6
    assert out.prompts == ["a"] * 4 + ["b"] * 4
    x = out.samples[:, 0]
    assert (x[:4] < 0).all() and (x[4:] > 0).all()  # no tree of one prompt serves the other


def test_forest_options_are_checked():
    with pytest.raises(da.DiffalignError, match="trees_per_prompt must be a positive integer"):
        da.samplers.get("dts-star", trees_per_prompt=0)
    with pytest.raises(da.DiffalignError, match="reuse_tree"):
        da.samplers.get("dts", reuse_tree=True, trees_per_prompt=2)


def test_a_forest_under_guidance_runs_one_prompt_at_a_time(oracle):
    seen = []

    def guide(x, prompts):
        seen.append(set(prompts))
        return reward(x, prompts).clamp(min=-10.0)

    guide.differentiable = True
    guided = da.RewardGuidance(oracle, guide, scale=0.1)
    out = da.sample(guided, reward, sampler="dts-star", prompts=["a", "b"], trees_per_prompt=2, num_samples=2, nfe=240,
                    steps=6, seed=0, branch_every=2, progress=False)
    assert out.info["prompt_batching"] == "one forest per prompt" and out.info["trees"] == 2  # per prompt, equal for both: given once
    assert all(len(prompts) == 1 for prompts in seen)  # every guided call saw one prompt's rows
    assert out.prompts == ["a", "a", "b", "b"]


def test_forest_trees_run_one_at_a_time_in_a_fixed_order(oracle):
    # each tree runs alone until its next model call: a tree resuming never finds another tree's Python
    # half-way (the sleep would hand the GIL over if two trees were awake), and rounds go tree 0, 1, 2, ...
    from diffalign.samplers.forest import run_forest

    running, order, overlaps = [0], [], []

    def job(tree):
        def run(model):
            for _ in range(3):
                running[0] += 1
                time.sleep(0.002)
                overlaps.append(running[0])
                order.append(tree)
                running[0] -= 1
                model.predict(torch.zeros(2, 2), torch.tensor(0.5), model.encode_condition("a", 2))
            return tree
        return run

    results, stats = run_forest(oracle, [job(i) for i in range(4)], max_rows=256)
    assert results == [0, 1, 2, 3] and max(overlaps) == 1
    assert order == [0, 1, 2, 3] * 3 and stats["calls"] == 3 and stats["rows_per_call"] == 8
    assert stats["network_seconds"] > 0 and stats["network_cpu_seconds"] > 0


def test_forest_steps_all_trees_rows_in_one_kernel_call(oracle, monkeypatch):
    # the kernel step (dozens of small tensor ops) runs once per shared call, not once per tree and call
    from diffalign import kernels

    stepped = []
    original = kernels.FlowSDE.__call__

    def counted(self, pred, t_next):
        stepped.append(len(pred.x))
        return original(self, pred, t_next)

    monkeypatch.setattr(kernels.FlowSDE, "__call__", counted)
    out = da.sample(oracle, reward, sampler="dts-star", prompts=["a", "b", "c"] * 4, num_samples=1, nfe=200, steps=6,
                    seed=0, branch_every=2, max_rows=40, progress=False)
    assert len(stepped) == out.info["model_calls"] and sum(stepped) == out.nfe
    assert max(stepped) == 40  # the cap cuts calls (and their steps) within a tree's rows too


@pytest.mark.parametrize("max_rows", [256, 4])
def test_a_shared_call_mixes_predictions_and_steps_of_several_kernels(oracle, max_rows):
    # plain predictions, steps of two kernels and a noiseless step share calls (cut across calls at 4
    # rows): each tree gets exactly what the model and its kernel give it alone
    from diffalign.samplers.forest import run_forest

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, 2, generator=g) for _ in range(4)]
    noises = [torch.randn(3, 2, generator=g) for _ in range(4)]
    cond = oracle.encode_condition("b", 1)
    sde, ddpm = da.kernels.get_kernel("flow-sde"), da.kernels.get_kernel("ddpm")
    jobs = [lambda m: m.predict(xs[0], 0.5, cond),
            lambda m: m.denoise_step(xs[1], 0.5, cond, sde, 0.4, noises[1]),
            lambda m: m.denoise_step(xs[2], torch.tensor([0.5, 0.3, 0.7]), cond, ddpm, torch.tensor([0.4, 0.2, 0.6]),
                                     noises[2]),
            lambda m: m.denoise_step(xs[3], 0.5, cond, sde, 0.4, None)]
    results, stats = run_forest(oracle, jobs, max_rows=max_rows)
    alone = oracle.predict(xs[0], 0.5, cond)
    assert torch.equal(results[0].x0, alone.x0) and torch.equal(results[0].eps, alone.eps)
    assert torch.equal(results[1], sde.step(oracle.predict(xs[1], 0.5, cond), 0.4, noises[1]))
    t, t_next = torch.tensor([0.5, 0.3, 0.7]), torch.tensor([0.4, 0.2, 0.6])
    assert torch.equal(results[2], ddpm.step(oracle.predict(xs[2], t, cond), t_next, noises[2]))
    assert torch.equal(results[3], sde.step(oracle.predict(xs[3], 0.5, cond), 0.4, None))
    assert stats["calls"] == (1 if max_rows == 256 else 3)
