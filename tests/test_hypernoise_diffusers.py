"""HyperNoise on stock few-step diffusers pipelines: the modulated noise goes in as ``latents=``.

Tiny random SD3 (FlowMatch) and FLUX (packed 2x2 latents) pipelines built from configs, no hub, no
text encoders (prompt embeddings are passed directly).
"""

import pytest
import torch

from diffalign.models.mlp_noise_hypernetwork import MLPNoiseHypernetwork
from diffalign.samplers.hypernoise_latents import hypernoise_latents

SIZE = 16


def _vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(4,), in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                         up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=2, sample_size=SIZE,
                         shift_factor=0.0, scaling_factor=1.0)


def sd3_pipeline():
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=SIZE, patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                        caption_projection_dim=16, pooled_projection_dim=16, pos_embed_max_size=SIZE)
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(),
                                    text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                    text_encoder_3=None, tokenizer_3=None)
    embeds = dict(prompt_embeds=torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(1)),
                  pooled_prompt_embeds=torch.randn(2, 16, generator=torch.Generator().manual_seed(2)))
    return pipe, embeds, (2, 4, SIZE, SIZE)


def flux_pipeline():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
                                         num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16,
                                         axes_dims_rope=[2, 2, 4])
    pipe = FluxPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(),
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    embeds = dict(prompt_embeds=torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(1)),
                  pooled_prompt_embeds=torch.randn(2, 16, generator=torch.Generator().manual_seed(2)))
    # FLUX latents: 2 * (SIZE // (vae_scale_factor * 2)) per side, packed into 2x2-patch tokens
    side = 2 * (SIZE // (pipe.vae_scale_factor * 2))
    return pipe, embeds, (2, 4, side, side)


def _run(pipe, embeds, **kwargs):
    out = pipe(**embeds, height=SIZE, width=SIZE, num_inference_steps=2, guidance_scale=1.0, output_type="latent", **kwargs)
    return out.images


@pytest.mark.parametrize("build", [sd3_pipeline, flux_pipeline], ids=["sd3", "flux-packed"])
def test_zero_hypernetwork_gives_the_stock_pipeline_output_bit_for_bit(build):
    pipe, embeds, shape = build()
    hyper = MLPNoiseHypernetwork(shape=shape[1:], hidden=8, layers=1)
    latents = hypernoise_latents(pipe, hyper, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    stock = _run(pipe, embeds, generator=torch.Generator().manual_seed(5))
    ours = _run(pipe, embeds, latents=latents)
    assert torch.equal(ours, stock)


@pytest.mark.parametrize("build", [sd3_pipeline, flux_pipeline], ids=["sd3", "flux-packed"])
def test_the_hypernetwork_modulates_the_unpacked_noise(build):
    pipe, embeds, shape = build()
    hyper = MLPNoiseHypernetwork(shape=shape[1:], hidden=8, layers=1)
    with torch.no_grad():
        hyper.net[-1].bias.fill_(0.5)  # f(z) = 0.5 everywhere: a visible, known modulation
    latents = hypernoise_latents(pipe, hyper, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    plain = hypernoise_latents(pipe, MLPNoiseHypernetwork(shape=shape[1:], hidden=8, layers=1), 2, SIZE, SIZE,
                               generator=torch.Generator().manual_seed(5))
    assert latents.shape == plain.shape  # packed exactly as the pipeline packs (FLUX: tokens x 4C)
    torch.testing.assert_close(latents - plain, torch.full_like(plain, 0.5), rtol=0, atol=1e-6)
    assert not torch.equal(_run(pipe, embeds, latents=latents), _run(pipe, embeds, latents=plain))
