"""Package hygiene: the public names resolve, and importing diffalign stays light."""

import subprocess
import sys

import pytest

import diffalign as da


def test_all_names_resolve():
    for name in da.__all__:
        assert getattr(da, name) is not None, name
    for module in (da.models, da.samplers, da.rewards):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"


def test_import_pulls_no_heavy_optional_dependency():
    heavy = ["open_clip", "transformers", "sklearn", "matplotlib", "diffusers", "peft", "torchmetrics", "accelerate"]
    code = "import sys, diffalign; print(' '.join(m for m in %r if m in sys.modules))" % heavy
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_design_snippet_runs():
    """design.md §3, as written (with small budgets)."""
    import torch

    model = da.load_model("digits")
    model = da.load_model("digits-flow")
    alphas_cumprod = torch.linspace(0.9999, 0.01, 100)
    fn = lambda x, t: torch.zeros_like(x)
    model = da.FunctionDenoiser(fn, schedule=da.VPSchedule(alphas_cumprod), prediction="eps", shape=(2,))
    model = da.FunctionDenoiser(fn, schedule=da.FlowSchedule(), prediction="flow", shape=(2,))
    model = da.load_model("digits")
    a, s = model.schedule.alpha(0.5), model.schedule.sigma(0.5)
    assert torch.isclose(a**2 + s**2, torch.tensor(1.0, dtype=a.dtype))
    reward = da.rewards.get("compressibility")
    reward = da.rewards.get("digit", target=3)
    sampler = da.samplers.get("best-of-n")
    out = sampler.sample(model, reward, num_samples=4, nfe=1000, steps=10, seed=0, cond=None)
    out = da.sample(model, reward, sampler="best-of-n", num_samples=4, nfe=1000, steps=10, seed=0)
    assert out.samples.shape == (4, 1, 8, 8)
    assert out.rewards.shape == (4,)
    assert isinstance(out.nfe, int) and out.nfe <= 1000
    out = da.sample(model, reward, sampler="best-of-n", num_samples=4, nfe=1000, steps=10, seed=0,
                    cond=torch.tensor([0, 1, 2, 3]))
    assert out.nfe <= 1000


@pytest.mark.slow
def test_design_snippet_with_its_own_numbers():
    """The §3 sampling lines with their exact budgets: DTS at 100k NFE on the embedded model."""
    model = da.load_model("digits")
    reward = da.rewards.get("digit", target=3)
    sampler = da.samplers.get("dts", leaves_per_iteration=256)  # "**options": rows per model call
    out = sampler.sample(model, reward, num_samples=64, nfe=100_000, steps=50, seed=0, cond=None)
    assert out.samples.shape == (64, 1, 8, 8) and out.rewards.shape == (64,)
    assert isinstance(out.nfe, int) and 0.9 * 100_000 < out.nfe <= 100_000
    # the tree targets p(x) p(3 | x); unconditional samples average log p(3 | x) of about -8
    assert out.rewards.mean() > -1.5
