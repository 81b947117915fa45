"""Everything composes through the plugin: search samplers, guidance wrappers, RLG and LoRAs, on
SD1.5-style and SD3-style tiny pipelines, with rewards computed on the VAE-decoded images."""

from __future__ import annotations

import pytest
import torch

import diffalign as da

from . import tiny

SIZE = dict(height=16, width=16)
SEARCH = [("best-of-n", {}), ("sir", {}), ("smc", {"resample_every": 1}), ("dts", {"branch_every": 1}),
          ("dts-star", {"branch_every": 1})]


@pytest.fixture(params=["sd", "sd3"])
def pipe(request, sd_pipe, sd3_pipe):
    return {"sd": sd_pipe, "sd3": sd3_pipe}[request.param]


@pytest.mark.parametrize("sampler,options", SEARCH, ids=[name for name, _ in SEARCH])
def test_search_samplers_with_a_decoded_image_reward(pipe, sampler, options):
    aligned = da.AlignedPipeline.from_pipe(pipe, sampler=sampler, reward="compressibility", progress=False, **options)
    out = aligned(prompt="a red square", negative_prompt="noise", num_inference_steps=2, guidance_scale=2.0,
                  num_images_per_prompt=2, nfe=48, output_type="pt", **SIZE)
    result = aligned.last_outputs[0]
    assert out.images.shape == (2, 3, 16, 16)
    assert 0 < result.nfe <= 48 and result.rewards.shape == (2,) and torch.isfinite(result.rewards).all()
    # the rewards are those of the returned (decoded) images
    torch.testing.assert_close(da.rewards.get("compressibility")(out.images), result.rewards, atol=1e-4, rtol=1e-4)


def test_clip_reward_and_reward_guidance_compose(pipe, tiny_clip):
    name, weights = tiny_clip
    clip = da.rewards.get("clip", prompt="a red square", model_name=name, pretrained=str(weights))
    aligned = da.AlignedPipeline.from_pipe(
        pipe, sampler="best-of-n", reward=clip, progress=False,
        wrapper=lambda model: da.RewardGuidance(model, clip, scale=1.0),
    )
    out = aligned(prompt="a red square", num_inference_steps=2, guidance_scale=2.0, num_images_per_prompt=2, nfe=64,
                  output_type="pt", **SIZE)
    result = aligned.last_outputs[0]
    assert out.images.shape == (2, 3, 16, 16) and result.info["n"] >= 1 and result.nfe <= 64
    torch.testing.assert_close(clip(out.images), result.rewards, atol=1e-4, rtol=1e-4)


def _sd_pipe_with_lora(tmp_path):
    from diffalign.models.lora import add_lora

    pipe = tiny.sd_pipeline(tmp_path / "files")
    pipe.set_progress_bar_config(disable=True)
    params = add_lora(pipe.unet, rank=2, alpha=2.0, target_modules=["to_q", "to_k", "to_v"], seed=0)
    with torch.no_grad():
        for p in params:
            p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(len(p.flatten())))
    return pipe


def test_rlg_runs_through_the_plugin_and_weight_zero_is_the_base(tmp_path):
    pipe = _sd_pipe_with_lora(tmp_path)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    args = dict(prompt="a cat", num_inference_steps=3, guidance_scale=1.0, output_type="latent", **SIZE)

    def run(weight):
        aligned = da.AlignedPipeline.from_pipe(pipe, sampler="ancestral", kernel="ddim", kernel_options={"eta": 0.0},
                                               wrapper=lambda m: da.RLGDenoiser(m, m, weight=weight, guidance_scale=2.0))
        return aligned(latents=latents.clone(), **args).images

    from diffalign.models.lora import adapters_disabled

    with torch.no_grad():
        with adapters_disabled(pipe.unet):
            base = pipe(latents=latents.clone(), **{**args, "guidance_scale": 2.0}).images
        tuned = pipe(latents=latents.clone(), **{**args, "guidance_scale": 2.0}).images
        torch.testing.assert_close(run(0.0), base, atol=5e-5, rtol=1e-4)
        torch.testing.assert_close(run(1.0), tuned, atol=5e-5, rtol=1e-4)
        assert not torch.allclose(base, tuned, atol=1e-3)
        run(1.5)


def test_a_diffalign_lora_loads_into_the_stock_pipeline(tmp_path, sd_dir):
    from diffusers import StableDiffusionPipeline

    from diffalign.models.lora import save_lora

    trained = _sd_pipe_with_lora(tmp_path)
    lora_dir = tmp_path / "lora"
    lora_dir.mkdir()
    save_lora(trained.unet, lora_dir)
    stock = StableDiffusionPipeline.from_pretrained(sd_dir)  # the same seeded base weights as `trained`
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    emb = torch.randn(1, 8, 16)
    with torch.no_grad():
        before = stock.unet(x, t, emb).sample
        stock.load_lora_weights(str(lora_dir))
        assert not torch.allclose(before, stock.unet(x, t, emb).sample, atol=1e-4)
        torch.testing.assert_close(stock.unet(x, t, emb).sample, trained.unet(x, t, emb).sample, atol=1e-5, rtol=1e-5)


def test_reno_optimises_noise_through_the_plugin(pipe, tiny_clip):
    """ReNO (issue 9) runs through AlignedPipeline: gradients flow through the denoiser, the pipeline's
    VAE and a differentiable decoded-image reward (CLIP on tiny random open_clip weights)."""
    name, weights = tiny_clip
    clip = da.rewards.get("clip", prompt="a red square", model_name=name, pretrained=str(weights))
    aligned = da.AlignedPipeline.from_pipe(pipe, sampler="reno", reward=clip, progress=False, iterations=2)
    out = aligned(prompt="a red square", num_inference_steps=2, guidance_scale=2.0, num_images_per_prompt=2,
                  output_type="pt", **SIZE)
    result = aligned.last_outputs[0]
    assert out.images.shape == (2, 3, 16, 16) and torch.isfinite(result.rewards).all()
    # one prompt, run as a prompt set under a prompt-reading reward: per-prompt statistics are one-entry lists
    (trace,), (initial,) = result.info["reward_trace"], result.info["initial_rewards"]
    assert result.nfe > 0 and len(trace) == 2 and result.prompts == ["a red square"] * 2
    # ReNO keeps each sample's best iterate, so no sample ends below its unoptimised noise
    assert (result.rewards >= initial.to(result.rewards) - 1e-5).all()
