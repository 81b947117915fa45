"""HyperNoise: zero-initialised hypernetworks change nothing (bit for bit), the loss by hand, save/load,
and the sampler's NFE accounting."""

import math

import pytest
import torch

import diffalign as da
from diffalign.models.hypernetwork_forms import build_hypernetwork, load_hypernetwork
from diffalign.noise_space import batch_jacobian, hypernoise_loss, logdet_correction, offset_penalty


@pytest.fixture(scope="module")
def model():
    return da.load_model("digits-flow")


def _perturb(hyper, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hyper.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return hyper


@pytest.mark.parametrize("form", ["lora", "mlp"])
def test_zero_initialised_hypernetwork_leaves_samples_unchanged_bit_for_bit(model, form):
    hyper = build_hypernetwork(form, model)
    for cond in (None, 3):
        ours = da.sample(model, None, sampler="hypernoise", hypernetwork=hyper, num_samples=5, steps=2, seed=7, cond=cond)
        base = da.sample(model, None, sampler="ancestral", kernel="euler", num_samples=5, steps=2, seed=7, cond=cond)
        assert torch.equal(ours.samples, base.samples)
        assert torch.count_nonzero(ours.info["offset_norms"]) == 0
    # the LoRA form's two network passes are NFE; the separate MLP costs none
    assert ours.nfe == 5 * 2 + (5 * 2 if form == "lora" else 0)


def test_hypernoise_loss_and_kl_terms_by_hand():
    offset = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    reward = torch.tensor([1.0, -2.0])
    torch.testing.assert_close(offset_penalty(offset), torch.tensor([12.5, 0.5]))
    # mean of (12.5 - 2 * 1, 0.5 - 2 * -2) = (10.5 + 4.5) / 2
    torch.testing.assert_close(hypernoise_loss(offset, reward, reward_weight=2.0), torch.tensor(7.5))
    jac = torch.diag_embed(torch.tensor([[0.5, -0.25], [0.0, 1.0]]))  # Tr J - log det(I + J)
    expected = torch.tensor([0.25 - math.log(1.5 * 0.75), 1.0 - math.log(2.0)])
    torch.testing.assert_close(logdet_correction(jac), expected)
    torch.testing.assert_close(hypernoise_loss(offset, reward, 2.0, expected), torch.tensor(7.5) + expected.mean())


def test_batch_jacobian_of_a_linear_map_is_its_matrix():
    a = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    z = torch.randn(3, 2, requires_grad=True)
    jac = batch_jacobian(z @ a.T, z)
    torch.testing.assert_close(jac, a.expand(3, 2, 2))
    # the exact correction vanishes to second order for small J (why the approximation drops it)
    small = 1e-3 * a.expand(1, 2, 2)
    assert logdet_correction(small).abs().item() < 1e-5


@pytest.mark.parametrize("form", ["lora", "mlp"])
def test_save_load_round_trip(model, tmp_path, form):
    hyper = _perturb(build_hypernetwork(form, model))
    hyper.save_pretrained(tmp_path / "h")
    loaded = load_hypernetwork(tmp_path / "h", model)
    z = torch.randn(4, *model.shape, generator=torch.Generator().manual_seed(0))
    cond = model.encode_condition(2, 4)
    with torch.no_grad():
        expected = hyper.offset(z, cond)
        assert expected.abs().max() > 0
        torch.testing.assert_close(loaded.offset(z, cond), expected, rtol=0, atol=1e-6)
    via_path = da.sample(model, None, sampler="hypernoise", path=str(tmp_path / "h"), num_samples=3, steps=1, seed=2)
    direct = da.sample(model, None, sampler="hypernoise", hypernetwork=loaded, num_samples=3, steps=1, seed=2)
    assert torch.equal(via_path.samples, direct.samples)
    # the user's model is untouched by the LoRA form (the adapter lives on a copy)
    assert not getattr(model.network, "_hf_peft_config_loaded", False)


def test_clear_errors(model, tmp_path):
    with pytest.raises(da.DiffalignError, match="exactly one of path=DIR"):
        da.samplers.get("hypernoise")
    with pytest.raises(da.DiffalignError, match="no noise hypernetwork at"):
        da.sample(model, None, sampler="hypernoise", path=str(tmp_path), num_samples=1, steps=1)
    with pytest.raises(da.DiffalignError, match="unknown hypernetwork form 'big'; valid choices: lora, mlp"):
        build_hypernetwork("big", model)
    oracle = da.FunctionDenoiser(lambda x, t: torch.zeros_like(x), schedule=da.FlowSchedule(), prediction="flow", shape=(2,))
    with pytest.raises(da.DiffalignError, match="use form 'mlp'"):
        build_hypernetwork("lora", oracle)
    with pytest.raises(da.DiffalignError, match="deterministic kernel"):
        da.sample(model, None, sampler="hypernoise", hypernetwork=build_hypernetwork("mlp", model), kernel="flow-sde", steps=1)


def test_mlp_form_works_for_any_model():
    oracle = da.FunctionDenoiser(lambda x, t: x, schedule=da.FlowSchedule(), prediction="flow", shape=(2,))
    hyper = _perturb(build_hypernetwork("mlp", oracle, hidden=8))
    out = da.sample(oracle, None, sampler="hypernoise", hypernetwork=hyper, num_samples=4, steps=2)
    assert out.samples.shape == (4, 2) and out.info["offset_norms"].min() > 0


def test_a_hypernetwork_is_refused_as_a_model_lora_and_run_directories_work_for_both(model, tmp_path):
    """Issue 22, newcomer 4. Failed before: `--lora runs/hypernoise/final` loaded the hypernetwork's LoRA
    into the model silently, and `path=RUN_DIR` was refused while `--lora RUN_DIR` ... was too."""
    hyper = _perturb(build_hypernetwork("lora", model))
    hyper.save_pretrained(tmp_path / "run" / "final")
    with pytest.raises(da.DiffalignError, match=r"noise hypernetwork \(hypernoise.json\), not a model LoRA"):
        da.load_model("digits-flow", lora=tmp_path / "run" / "final")
    with pytest.raises(da.DiffalignError, match="not a model LoRA"):
        da.load_model("digits-flow", lora=tmp_path / "run")  # the run directory stands for its final/
    via_run = da.sample(model, None, sampler="hypernoise", path=str(tmp_path / "run"), num_samples=2, steps=1, seed=2)
    via_final = da.sample(model, None, sampler="hypernoise", path=str(tmp_path / "run" / "final"), num_samples=2, steps=1, seed=2)
    assert torch.equal(via_run.samples, via_final.samples)
