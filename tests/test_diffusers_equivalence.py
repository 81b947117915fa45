"""Our sampling loop vs the stock diffusers pipelines on tiny random models, from the same latents."""

import numpy as np
import pytest
import torch

import diffalign as da
from diffalign.models.class_condition import ClassEmbeddingCondition
from diffalign.models.diffusers_adapters import SD3Denoiser, UNetDenoiser
from diffalign.models.digits import transformer_config, unet_config
from diffalign.samplers.rollout import rollout


@pytest.fixture(scope="module")
def tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**unet_config(tiny=True)).eval()


@pytest.fixture(scope="module")
def tiny_sd3():
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(**transformer_config(tiny=True)).eval()


def _sd_pipeline(unet, scheduler):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


@pytest.mark.parametrize("eta,prediction_type", [(0.0, "epsilon"), (1.0, "epsilon"), (0.0, "v_prediction")])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_unet_loop_matches_stable_diffusion_pipeline(tiny_unet, eta, prediction_type, guidance):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
        set_alpha_to_one=True, timestep_spacing="trailing", steps_offset=1, prediction_type=prediction_type,
    )
    condition = ClassEmbeddingCondition(10, {"encoder_hidden_states": (4, 32)})
    ours = UNetDenoiser(
        tiny_unet, schedule=da.VPSchedule.from_scheduler(scheduler),
        prediction={"epsilon": "eps", "v_prediction": "v"}[prediction_type], shape=(1, 8, 8), condition_encoder=condition,
    )
    latents = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = condition.encode(torch.tensor([1, 2, 3]), 3)
    null = condition.null(3)
    steps = 10

    with torch.no_grad():
        pipe = _sd_pipeline(tiny_unet, scheduler)
        expected = pipe(
            prompt_embeds=cond["encoder_hidden_states"], negative_prompt_embeds=null["encoder_hidden_states"],
            latents=latents.clone(), num_inference_steps=steps, guidance_scale=guidance, eta=eta,
            height=64, width=64, output_type="latent", generator=torch.Generator().manual_seed(7),
        ).images
        model = da.CFGDenoiser(ours, guidance)
        got = rollout(model, latents.clone(), model.schedule.time_grid(steps), da.DDIM(eta), cond,
                      torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_sd3_loop_matches_sd3_pipeline(tiny_sd3, guidance):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    condition = ClassEmbeddingCondition(10, {"encoder_hidden_states": (4, 32), "pooled_projections": (32,)})
    ours = SD3Denoiser(tiny_sd3, schedule=da.FlowSchedule.from_scheduler(scheduler), prediction="flow",
                       shape=(1, 8, 8), condition_encoder=condition)
    latents = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, null = condition.encode(torch.tensor([4, 5]), 2), condition.null(2)
    steps = 8
    with torch.no_grad():
        pipe = StableDiffusion3Pipeline(
            transformer=tiny_sd3, scheduler=scheduler, vae=None, text_encoder=None, tokenizer=None,
            text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
        )
        expected = pipe(
            prompt_embeds=cond["encoder_hidden_states"], negative_prompt_embeds=null["encoder_hidden_states"],
            pooled_prompt_embeds=cond["pooled_projections"], negative_pooled_prompt_embeds=null["pooled_projections"],
            latents=latents.clone(), num_inference_steps=steps, guidance_scale=guidance,
            height=64, width=64, output_type="latent",
        ).images
        model = da.CFGDenoiser(ours, guidance)
        grid = model.schedule.time_grid_from_scheduler(scheduler, steps)
        got = rollout(model, latents.clone(), grid, da.Euler(), cond, torch.Generator())
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


# -- every family through AlignedPipeline: same latents and embeddings -> the stock pipeline's latents --------

def _embeds(rows, tokens, dim, seed):
    return torch.randn(rows, tokens, dim, generator=torch.Generator().manual_seed(seed))


def _pooled(rows, dim, seed):
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))


def _family_case(name):
    from tests.pipelines import tiny

    if name == "sd-eps":
        pipe = tiny.sd_pipeline(with_text=False, with_vae=False)
        return pipe, "ddim", {"eta": 0.0}, (2, 4, 8, 8), dict(height=64, width=64), {
            "prompt_embeds": _embeds(2, 8, 16, 1), "negative_prompt_embeds": _embeds(2, 8, 16, 2)}
    if name == "sd-v":
        pipe = tiny.sd_pipeline(with_text=False, with_vae=False, prediction_type="v_prediction")
        return pipe, "ddim", {"eta": 0.0}, (2, 4, 8, 8), dict(height=64, width=64), {
            "prompt_embeds": _embeds(2, 8, 16, 1), "negative_prompt_embeds": _embeds(2, 8, 16, 2)}
    if name == "sdxl":
        # EulerDiscreteScheduler's ODE step on an eps model is DDIM(eta=0) in our time convention
        return tiny.sdxl_pipeline(), "ddim", {"eta": 0.0}, (2, 4, 8, 8), dict(height=64, width=64), {
            "prompt_embeds": _embeds(2, 8, 32, 1), "negative_prompt_embeds": _embeds(2, 8, 32, 2),
            "pooled_prompt_embeds": _pooled(2, 16, 3), "negative_pooled_prompt_embeds": _pooled(2, 16, 4)}
    if name == "sd3":
        return tiny.sd3_pipeline(with_text=False, with_vae=False), "euler", {}, (2, 4, 8, 8), dict(height=64, width=64), {
            "prompt_embeds": _embeds(2, 8, 32, 1), "negative_prompt_embeds": _embeds(2, 8, 32, 2),
            "pooled_prompt_embeds": _pooled(2, 16, 3), "negative_pooled_prompt_embeds": _pooled(2, 16, 4)}
    if name == "flux":
        return tiny.flux_pipeline(), "euler", {}, (2, 16, 16), dict(height=64, width=64), {
            "prompt_embeds": _embeds(2, 8, 16, 1), "pooled_prompt_embeds": _pooled(2, 16, 3)}
    if name == "wan":
        return tiny.wan_pipeline(), "euler", {}, (2, 4, 2, 8, 8), dict(height=64, width=64, num_frames=5), {
            "prompt_embeds": _embeds(2, 8, 16, 1), "negative_prompt_embeds": _embeds(2, 8, 16, 2)}
    raise KeyError(name)


@pytest.mark.parametrize("family", ["sd-eps", "sd-v", "sdxl", "sd3", "flux", "wan"])
def test_aligned_pipeline_plain_loop_matches_stock_pipeline(family):
    pipe, kernel, kernel_options, latent_shape, size, embeds = _family_case(family)
    latents = torch.randn(*latent_shape, generator=torch.Generator().manual_seed(0))
    steps, guidance = 6, 3.0
    with torch.no_grad():
        expected = pipe(latents=latents.clone(), num_inference_steps=steps, guidance_scale=guidance,
                        output_type="latent", **size, **embeds).__getitem__(0)
        aligned = da.AlignedPipeline.from_pipe(pipe, sampler="ancestral", kernel=kernel, kernel_options=kernel_options,
                                               progress=False)
        got = aligned(latents=latents.clone(), num_inference_steps=steps, guidance_scale=guidance,
                      output_type="latent", **size, **embeds)[0]
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=5e-5, rtol=1e-4)
    passes = 1 if family == "flux" else 2  # FLUX's guidance is distilled: one pass per step
    assert sum(out.nfe for out in aligned.last_outputs) == 2 * steps * passes


def test_wan_video_decoding_matches_the_stock_pipeline():
    from tests.pipelines import tiny

    pipe = tiny.wan_pipeline(with_vae=True)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    args = dict(prompt_embeds=_embeds(1, 8, 16, 1), negative_prompt_embeds=_embeds(1, 8, 16, 2), num_inference_steps=3,
                guidance_scale=3.0, height=64, width=64, num_frames=5, output_type="np")
    with torch.no_grad():
        expected = pipe(latents=latents.clone(), **args).frames
        aligned = da.AlignedPipeline.from_pipe(pipe, sampler="ancestral", kernel="euler")
        got = aligned(latents=latents.clone(), **args).frames
    assert got.shape == expected.shape == (1, 5, 64, 64, 3)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_flux_true_cfg_with_negative_embeddings_matches_the_stock_pipeline():
    from tests.pipelines import tiny

    pipe = tiny.flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
    args = dict(prompt_embeds=_embeds(1, 8, 16, 1), pooled_prompt_embeds=_pooled(1, 16, 3),
                negative_prompt_embeds=_embeds(1, 8, 16, 2), negative_pooled_prompt_embeds=_pooled(1, 16, 4),
                num_inference_steps=4, guidance_scale=3.5, true_cfg_scale=2.5, height=64, width=64, output_type="latent")
    with torch.no_grad():
        expected = pipe(latents=latents.clone(), **args).images
        aligned = da.AlignedPipeline.from_pipe(pipe, sampler="ancestral", kernel="euler")
        got = aligned(latents=latents.clone(), **args).images
    torch.testing.assert_close(got, expected, atol=5e-5, rtol=1e-4)
    assert aligned.last_outputs[0].nfe == 2 * 4  # true CFG: two passes per step


def test_network_dtype_is_cached_and_follows_a_cast():
    """diffusers' ModelMixin.dtype walks every submodule on each read; the adapter reads it once, and a later
    ``.to(dtype)`` of the network refreshes it (the model then runs in the new dtype)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config(tiny=True)).eval()
    condition = ClassEmbeddingCondition(10, {"encoder_hidden_states": (4, 32)})
    model = UNetDenoiser(unet, schedule=da.VPSchedule.linear(1e-4, 0.02, 1000), prediction="eps", shape=(1, 8, 8),
                         condition_encoder=condition)
    x, t, cond = torch.randn(2, 1, 8, 8), torch.full((2,), 0.5), condition.encode(torch.tensor([1, 2]), 2)
    assert model.network_dtype == torch.float32
    with torch.no_grad():
        out32 = model(x, t, cond)
        unet.to(torch.float64)
        assert model.network_dtype == torch.float64
        out64 = model(x, t, cond)
    assert out32.dtype == out64.dtype == torch.float32  # cast back to x's dtype
    torch.testing.assert_close(out64, out32, atol=1e-4, rtol=1e-4)
