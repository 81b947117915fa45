"""Own models without the plugin: ``da.load_model(dir)`` on pipeline directories, prompts, conditions, CFG."""

from __future__ import annotations

import pytest
import torch

import diffalign as da

SAMPLER_BUDGETS = {"ancestral": None, "best-of-n": 24, "sir": 24, "smc": 24, "dts": 40, "dts-star": 40}


def test_prompt_conditioning_uses_the_pipelines_encode_prompt(sd_dir, sd_pipe):
    model = da.load_model(sd_dir)
    cond = model.encode_condition("a photo of a cat", 3)
    expected, null_expected = sd_pipe.encode_prompt("a photo of a cat", "cpu", 1, True)
    assert cond["encoder_hidden_states"].shape == (3, 8, 16)
    torch.testing.assert_close(cond["encoder_hidden_states"][2:], expected)
    # the null condition of CFG is the family's own: SD1.5 encodes the empty prompt
    torch.testing.assert_close(model.null_condition(2)["encoder_hidden_states"][:1], null_expected)
    assert model.decode(torch.zeros(1, *model.shape)).shape == (1, 3, 16, 16)


def test_prompt_sampling_with_cfg_on_a_loaded_pipeline_directory(sd_dir):
    model = da.CFGDenoiser(da.load_model(sd_dir), 4.0)
    out = da.sample(model, "compressibility", sampler="best-of-n", num_samples=2, nfe=2 * 2 * 3 * 2, steps=3,
                    cond="a photo of a cat", progress=False)
    assert out.samples.shape == (2, 4, 8, 8) and out.nfe == 24 and torch.isfinite(out.rewards).all()


def test_missing_condition_is_one_error_with_expected_keys_and_shapes(bare_sd_dir):
    model = da.load_model(bare_sd_dir)
    with pytest.raises(da.DiffalignError, match=r"'encoder_hidden_states': \(B, L, 16\)"):
        da.sample(model, num_samples=2, steps=2, progress=False)
    with pytest.raises(da.DiffalignError, match=r"got \{'prompt_embeds': \(1, 8, 16\)\}"):
        da.sample(model, num_samples=2, steps=2, cond={"prompt_embeds": torch.zeros(1, 8, 16)}, progress=False)
    with pytest.raises(da.DiffalignError, match=r"got \{'encoder_hidden_states': \(1, 8, 12\)\}"):
        da.sample(model, num_samples=2, steps=2, cond={"encoder_hidden_states": torch.zeros(1, 8, 12)}, progress=False)
    with pytest.raises(da.DiffalignError, match="no text encoder"):
        da.sample(model, num_samples=2, steps=2, cond="a cat", progress=False)


@pytest.mark.parametrize("sampler", sorted(SAMPLER_BUDGETS))
def test_every_sampler_broadcasts_a_batch_one_condition(bare_sd_dir, sampler):
    model = da.load_model(bare_sd_dir)
    cond = {"encoder_hidden_states": torch.randn(1, 8, 16, generator=torch.Generator().manual_seed(0))}
    options = {"branch_every": 1} if sampler.startswith("dts") else {}
    out = da.sample(model, "compressibility", sampler=sampler, num_samples=3, nfe=SAMPLER_BUDGETS[sampler], steps=2,
                    cond=cond, progress=False, **options)
    assert out.samples.shape == (3, 4, 8, 8)
    # same result as the condition repeated by hand
    repeated = {"encoder_hidden_states": cond["encoder_hidden_states"].repeat(3, 1, 1)}
    again = da.sample(model, "compressibility", sampler=sampler, num_samples=3, nfe=SAMPLER_BUDGETS[sampler], steps=2,
                      cond=repeated, progress=False, **options)
    torch.testing.assert_close(out.samples, again.samples)


def test_cfg_with_a_dict_condition_takes_an_explicit_null_condition(bare_sd_dir):
    model = da.load_model(bare_sd_dir)
    gen = torch.Generator().manual_seed(1)
    cond = {"encoder_hidden_states": torch.randn(1, 8, 16, generator=gen)}
    null = {"encoder_hidden_states": torch.randn(1, 8, 16, generator=gen)}
    with pytest.raises(da.DiffalignError, match="null_cond"):
        da.sample(da.CFGDenoiser(model, 5.0), num_samples=2, steps=2, cond=cond, progress=False)
    guided = da.CFGDenoiser(model, 5.0, null_cond=null)
    x, t = torch.randn(2, 4, 8, 8, generator=gen), torch.tensor(0.5)
    with torch.no_grad():
        got = guided.predict(x, t, model.encode_condition(cond, 2)).eps
        c, n = model.predict(x, t, model.encode_condition(cond, 2)).eps, model.predict(x, t, model.encode_condition(null, 2)).eps
    torch.testing.assert_close(got, n + 5.0 * (c - n), atol=1e-5, rtol=1e-5)
    assert guided.evals_for(cond) == 2
    with pytest.raises(da.DiffalignError, match="'pooled_projections': \\(B, 32\\)"):  # checked when built
        da.CFGDenoiser(da.load_model("digits-flow"), 3.0, null_cond={"encoder_hidden_states": torch.zeros(1, 4, 32)})


def test_sd3_pipeline_directory_with_two_text_encoders(sd3_pipe, tmp_path):
    sd3_pipe.save_pretrained(tmp_path / "sd3")
    model = da.load_model(tmp_path / "sd3")
    assert type(model).__name__ == "SD3Denoiser" and model.shape == (4, 8, 8)
    cond, null = model.encode_condition("a cat", 2), model.null_condition(2)
    expected, negative, pooled, negative_pooled = sd3_pipe.encode_prompt("a cat", None, None, "cpu", 1, True)
    torch.testing.assert_close(cond["encoder_hidden_states"][:1], expected)
    torch.testing.assert_close(cond["pooled_projections"][1:], pooled)
    torch.testing.assert_close(null["pooled_projections"][:1], negative_pooled)
    out = da.sample(da.CFGDenoiser(model, 3.0), "compressibility", sampler="smc", num_samples=2, nfe=24, steps=2,
                    cond="a cat", progress=False)
    assert out.samples.shape == (2, 4, 8, 8) and out.nfe <= 24
