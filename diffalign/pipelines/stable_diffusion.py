"""SD1.5/SD2 (``StableDiffusionPipeline``) and SDXL (``StableDiffusionXLPipeline``) family glue.

Both use ``UNet2DConditionModel`` on a VP schedule (eps or v prediction, from the scheduler config).
SDXL's UNet also takes the pooled text embedding (``text_embeds``) and six micro-conditioning
``time_ids`` (original size, crop corner, target size; Podell et al. 2023, §2.2), built here with the
pipeline's own ``_get_add_time_ids``.
"""

from __future__ import annotations

from .family import VPFamily, repeat_rows


class StableDiffusionFamily(VPFamily):
    name = "sd"
    default_steps = 50
    default_guidance = 7.5

    def encode_prompt(self, pipe, prompt, negative_prompt, num_per_prompt, guidance, device, shape, **embeddings):
        cond, null = pipe.encode_prompt(
            prompt=prompt, device=device, num_images_per_prompt=num_per_prompt, do_classifier_free_guidance=guidance,
            negative_prompt=negative_prompt, **embeddings,
        )
        return {"encoder_hidden_states": cond}, (None if null is None else {"encoder_hidden_states": null})

    def output(self, pipe, images, return_dict):
        from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=None) if return_dict else (images, None)


class StableDiffusionXLFamily(VPFamily):
    name = "sdxl"
    embedding_arguments = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                           "negative_pooled_prompt_embeds")
    default_steps = 50
    default_guidance = 5.0

    def encode_prompt(self, pipe, prompt, negative_prompt, num_per_prompt, guidance, device, shape, **embeddings):
        cond, null, pooled, null_pooled = pipe.encode_prompt(
            prompt=prompt, device=device, num_images_per_prompt=num_per_prompt, do_classifier_free_guidance=guidance,
            negative_prompt=negative_prompt, **embeddings,
        )
        factor = self.vae_scale_factor(pipe)
        size = (shape[-2] * factor, shape[-1] * factor)
        projection = (int(pooled.shape[-1]) if getattr(pipe, "text_encoder_2", None) is None
                      else pipe.text_encoder_2.config.projection_dim)
        time_ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=cond.dtype, text_encoder_projection_dim=projection)
        time_ids = repeat_rows(time_ids.to(cond.device), cond.shape[0])
        positive = {"encoder_hidden_states": cond, "text_embeds": pooled, "time_ids": time_ids}
        if null is None:
            return positive, None
        return positive, {"encoder_hidden_states": null, "text_embeds": null_pooled, "time_ids": time_ids}

    def output(self, pipe, images, return_dict):
        from diffusers.pipelines.stable_diffusion_xl.pipeline_output import StableDiffusionXLPipelineOutput

        return StableDiffusionXLPipelineOutput(images=images) if return_dict else (images,)
