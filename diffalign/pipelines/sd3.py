"""SD3 / SD3.5 (``StableDiffusion3Pipeline``) family glue: ``SD3Transformer2DModel``, rectified flow.

Prompts go through the pipeline's ``encode_prompt`` (two CLIP encoders and T5, or zeros for an absent
T5); the grid is the FlowMatch scheduler's shifted sigmas (Esser et al. 2024, §5.3.2).
"""

from __future__ import annotations

from .family import PipelineFamily


class SD3Family(PipelineFamily):
    name = "sd3"
    embedding_arguments = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                           "negative_pooled_prompt_embeds")
    default_steps = 28
    default_guidance = 7.0

    def adapter(self):
        from ..models.diffusers_adapters import SD3Denoiser

        return SD3Denoiser

    def encode_prompt(self, pipe, prompt, negative_prompt, num_per_prompt, guidance, device, shape, **embeddings):
        cond, null, pooled, null_pooled = pipe.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=device, num_images_per_prompt=num_per_prompt,
            do_classifier_free_guidance=guidance, negative_prompt=negative_prompt, **embeddings,
        )
        positive = {"encoder_hidden_states": cond, "pooled_projections": pooled}
        return positive, (None if null is None else {"encoder_hidden_states": null, "pooled_projections": null_pooled})

    def output(self, pipe, images, return_dict):
        from diffusers.pipelines.stable_diffusion_3.pipeline_output import StableDiffusion3PipelineOutput

        return StableDiffusion3PipelineOutput(images=images) if return_dict else (images,)
