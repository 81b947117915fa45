"""FLUX.1 (``FluxPipeline``) family glue: ``FluxTransformer2DModel``, rectified flow.

Model space is the unpacked latent (C, H, W); the adapter packs it into 2x2 tokens. ``guidance_scale``
is FLUX.1-dev's *distilled* guidance (a network input, one pass per step); true CFG with a negative
prompt is ``true_cfg_scale``, as in the stock pipeline. The grid is ``linspace(1, 1/n, n)`` shifted by
the resolution-dependent ``mu`` of the pipeline (``calculate_shift`` of the packed sequence length).
"""

from __future__ import annotations

import numpy as np

from .family import PipelineFamily


class FluxFamily(PipelineFamily):
    name = "flux"
    embedding_arguments = ("prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds",
                           "negative_pooled_prompt_embeds")
    default_steps = 28
    default_guidance = 3.5
    guidance_is_distilled = True

    def adapter(self):
        from ..models.diffusers_adapters import FluxDenoiser

        return FluxDenoiser

    def latent_shape(self, pipe, height, width, num_frames):
        # the pipeline's latents are 2 * (size // (2 * vae factor)) on each side, C = in_channels / 4
        factor = self.vae_scale_factor(pipe)
        channels = self.network(pipe).config.in_channels // 4
        return (channels, 2 * (height // (2 * factor)), 2 * (width // (2 * factor)))

    def default_size(self, pipe):
        size = getattr(pipe, "default_sample_size", 128) * self.vae_scale_factor(pipe)
        return size, size

    def time_grid(self, pipe, schedule, steps, shape):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        cfg = pipe.scheduler.config
        mu = calculate_shift(
            (shape[-2] // 2) * (shape[-1] // 2), cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
            cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15),
        )
        pipe.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        import torch

        return torch.as_tensor(pipe.scheduler.sigmas, dtype=torch.float64).cpu()

    def denoiser_options(self, pipe, guidance_scale):
        return {"guidance": self.default_guidance if guidance_scale is None else guidance_scale}

    def encode_prompt(self, pipe, prompt, negative_prompt, num_per_prompt, guidance, device, shape, **embeddings):
        negative = {key[len("negative_"):]: embeddings.pop(key) for key in list(embeddings) if key.startswith("negative_")}
        cond, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=device,
                                             num_images_per_prompt=num_per_prompt, **embeddings)
        positive = {"encoder_hidden_states": cond, "pooled_projections": pooled}
        if not guidance:
            return positive, None
        null, null_pooled, _ = pipe.encode_prompt(
            prompt=(negative_prompt or "") if not negative else None, prompt_2=None, device=device,
            num_images_per_prompt=num_per_prompt, **negative,
        )
        return positive, {"encoder_hidden_states": null, "pooled_projections": null_pooled}

    def unpack_latents(self, pipe, latents, height, width):
        from ..models.diffusers_adapters import unpack_latents

        channels, h, w = self.latent_shape(pipe, height, width, None)
        return unpack_latents(latents, channels, h, w)

    def pack_latents(self, latents):
        from ..models.diffusers_adapters import pack_latents

        return pack_latents(latents)

    def output(self, pipe, images, return_dict):
        from diffusers.pipelines.flux.pipeline_output import FluxPipelineOutput

        return FluxPipelineOutput(images=images) if return_dict else (images,)
