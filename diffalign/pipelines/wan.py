"""Wan 2.1 text-to-video (``WanPipeline``) family glue: ``WanTransformer3DModel``, rectified flow.

Model space is the video latent (C, F, H, W) with F = (num_frames - 1) / 4 + 1; decoding goes through
``AutoencoderKLWan`` after undoing its per-channel latent normalisation (:class:`WanVAEDecoder`).
Outputs are videos: ``output_type`` "np" (default), "pt", "pil" frames or "latent", as the stock pipeline.
"""

from __future__ import annotations

from .family import PipelineFamily


class WanFamily(PipelineFamily):
    name = "wan"
    default_steps = 50
    default_guidance = 5.0
    default_frames = 81
    output_name = "frames"

    def adapter(self):
        from ..models.diffusers_adapters import WanDenoiser

        return WanDenoiser

    def latent_shape(self, pipe, height, width, num_frames):
        frames = self.default_frames if num_frames is None else num_frames
        spatial, temporal = pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal
        return (self.network(pipe).config.in_channels, (frames - 1) // temporal + 1, height // spatial, width // spatial)

    def default_size(self, pipe):
        return 480, 832

    def decoder(self, pipe):
        from ..models.diffusers_adapters import WanVAEDecoder

        return WanVAEDecoder(pipe.vae) if getattr(pipe, "vae", None) is not None else None

    def encode_prompt(self, pipe, prompt, negative_prompt, num_per_prompt, guidance, device, shape, **embeddings):
        cond, null = pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=guidance,
            num_videos_per_prompt=num_per_prompt, device=device, **embeddings,
        )
        return {"encoder_hidden_states": cond}, (None if null is None else {"encoder_hidden_states": null})

    def postprocess(self, pipe, videos, output_type):
        return pipe.video_processor.postprocess_video(videos * 2.0 - 1.0, output_type=output_type)

    def output(self, pipe, frames, return_dict):
        from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput

        return WanPipelineOutput(frames=frames) if return_dict else (frames,)
