"""``AlignedPipeline.from_pipe``: shared components, prompts and negative prompts, outputs, budget, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffalign as da

SIZE = dict(height=16, width=16)


def test_shares_the_pipelines_components(sd_pipe):
    aligned = da.AlignedPipeline.from_pipe(sd_pipe, sampler="best-of-n", reward="compressibility")
    model = aligned.denoiser(**SIZE)
    assert aligned.unet is sd_pipe.unet and aligned.vae is sd_pipe.vae
    assert all(aligned.components[name] is module for name, module in sd_pipe.components.items())
    assert model.network is sd_pipe.unet and model.decoder.vae is sd_pipe.vae
    assert model.condition_encoder.pipe is sd_pipe
    ours = {p.data_ptr() for p in model.parameters()}
    assert ours <= {p.data_ptr() for m in (sd_pipe.unet, sd_pipe.vae) for p in m.parameters()}


@pytest.mark.parametrize("negative_prompt", [None, ["blurry", "ugly"]])
def test_prompts_and_negative_prompts_match_the_stock_pipeline(sd_pipe, negative_prompt):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    args = dict(prompt=["a cat", "a dog"], negative_prompt=negative_prompt, num_inference_steps=4, guidance_scale=3.0,
                output_type="latent", **SIZE)
    with torch.no_grad():
        expected = sd_pipe(latents=latents.clone(), **args).images
        aligned = da.AlignedPipeline.from_pipe(sd_pipe, sampler="ancestral", kernel="ddim", kernel_options={"eta": 0.0})
        got = aligned(latents=latents.clone(), **args).images
    torch.testing.assert_close(got, expected, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("output_type", ["pil", "np", "pt", "latent"])
def test_returns_what_the_stock_pipeline_returns(sd_pipe, output_type):
    args = dict(prompt="a cat", num_inference_steps=2, output_type=output_type, num_images_per_prompt=2, **SIZE)
    with torch.no_grad():
        stock = sd_pipe(**args)
        aligned = da.AlignedPipeline.from_pipe(sd_pipe, sampler="best-of-n", reward="compressibility")
        ours = aligned(nfe=16, **args)
        as_tuple = aligned(nfe=16, return_dict=False, **args)
    assert type(ours) is type(stock) and isinstance(as_tuple, tuple)
    first, stock_first = ours.images, stock.images
    if output_type == "pil":
        assert len(first) == 2 and first[0].size == stock_first[0].size
    else:
        assert type(first) is type(stock_first) and first.shape == stock_first.shape
    if output_type in ("np", "pt"):
        assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert sum(out.nfe for out in aligned.last_outputs) <= 16


def test_nfe_budget_is_per_prompt_and_seeding_is_deterministic(sd_pipe):
    aligned = da.AlignedPipeline.from_pipe(sd_pipe, sampler="best-of-n", reward="compressibility", progress=False)
    args = dict(prompt=["a cat", "a dog"], num_inference_steps=2, guidance_scale=2.0, num_images_per_prompt=2,
                nfe=32, output_type="np", **SIZE)
    first = aligned(generator=torch.Generator().manual_seed(3), **args).images
    (out,) = aligned.last_outputs  # one prompt-set call: both prompts' rows share model calls
    second = aligned(generator=torch.Generator().manual_seed(3), **args).images
    assert first.shape == (4, 16, 16, 3) and np.array_equal(first, second)
    assert out.info["nfe_per_prompt"] == [32, 32]  # 2 images x 4 candidates x 2 steps x 2 CFG passes per prompt
    assert out.info["n"] == 4 and out.prompts == ["a cat", "a cat", "a dog", "a dog"]


def test_each_image_reward_sees_its_own_prompt(sd_pipe):
    def prompt_length(images, prompts):
        return torch.tensor([float(len(p)) for p in prompts])

    prompts = ["a cat", "a large dog"]
    for sampler in ("best-of-n", "smc"):
        aligned = da.AlignedPipeline.from_pipe(sd_pipe, sampler=sampler, reward=prompt_length, progress=False)
        aligned(prompt=prompts, num_inference_steps=2, guidance_scale=2.0, num_images_per_prompt=2, nfe=16,
                output_type="np", **SIZE)
        assert aligned.last_outputs[0].rewards.tolist() == [5.0, 5.0, 11.0, 11.0]
        # a negative prompt per prompt runs prompt by prompt; the reward still sees each image's prompt
        aligned(prompt=prompts, negative_prompt=["blurry", "dark"], num_inference_steps=2, guidance_scale=2.0,
                num_images_per_prompt=2, nfe=16, output_type="np", **SIZE)
        assert [o.rewards.tolist() for o in aligned.last_outputs] == [[5.0, 5.0], [11.0, 11.0]]


def test_bad_arguments_are_one_line_errors(sd_pipe):
    aligned = da.AlignedPipeline.from_pipe(sd_pipe)
    with pytest.raises(da.DiffalignError, match="valid choices: pil, np, pt, latent"):
        aligned(prompt="a cat", output_type="jpeg")
    with pytest.raises(da.DiffalignError, match="valid embedding arguments: prompt_embeds, negative_prompt_embeds"):
        aligned(prompt_embeds=torch.zeros(1, 8, 16), pooled_prompt_embeds=torch.zeros(1, 16))
    with pytest.raises(da.DiffalignError, match="'ancestral' sampler only"):
        da.AlignedPipeline.from_pipe(sd_pipe, sampler="best-of-n", reward="compressibility")(
            prompt="a cat", latents=torch.zeros(1, 4, 8, 8), **SIZE)
    with pytest.raises(da.DiffalignError, match="unknown sampler|valid"):
        da.AlignedPipeline.from_pipe(sd_pipe, sampler="nope")


def test_attention_option_errors(sd_pipe):
    with pytest.raises(da.DiffalignError, match="valid choices: sdpa, xformers"):
        da.AlignedPipeline.from_pipe(sd_pipe, attention="flash")
    # this machine has no xformers (or no CUDA): one clear error either way
    with pytest.raises(da.DiffalignError, match="xformers"):
        da.AlignedPipeline.from_pipe(sd_pipe, attention="xformers")
    assert da.AlignedPipeline.from_pipe(sd_pipe, attention="sdpa").pipe is sd_pipe


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_decoded_images_match_the_stock_pipeline(sd_pipe, sd3_pipe, family):
    pipe, kernel, options = {"sd": (sd_pipe, "ddim", {"eta": 0.0}), "sd3": (sd3_pipe, "euler", {})}[family]
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    args = dict(prompt="a cat", num_inference_steps=3, guidance_scale=2.0, output_type="np", **SIZE)
    with torch.no_grad():
        expected = pipe(latents=latents.clone(), **args).images
        aligned = da.AlignedPipeline.from_pipe(pipe, sampler="ancestral", kernel=kernel, kernel_options=options)
        got = aligned(latents=latents.clone(), **args).images
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_latents_that_do_not_fit_are_one_error(sd_pipe):
    aligned = da.AlignedPipeline.from_pipe(sd_pipe, sampler="ancestral")
    with pytest.raises(da.DiffalignError, match="expected 1 prompts x 2 images"):
        aligned(prompt="a cat", latents=torch.zeros(1, 4, 8, 8), num_images_per_prompt=2, **SIZE)
    with pytest.raises(da.DiffalignError, match="do not fit height/width"):
        aligned(prompt="a cat", latents=torch.zeros(1, 4, 8, 8), height=32, width=32)
