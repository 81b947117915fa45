"""Family glue: how diffalign borrows one diffusers pipeline family's components.

A :class:`PipelineFamily` says, once per family, how to build the family's :class:`Denoiser` from a
pipeline (network adapter, schedule, the pipeline's own time grid, VAE decoding), how to encode
prompts with the pipeline's own ``encode_prompt`` (and its empty-prompt null condition for CFG), and
how to turn decoded images into what the stock pipeline returns. Nothing is copied: the denoiser holds
the pipeline's modules themselves.

The family of a pipeline is read from its denoising network's class (``pipe.unet`` or
``pipe.transformer``), see :func:`~diffalign.pipelines.families.family_of` (the registry imports the
families; this base imports none of them).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import DiffalignError
from ..models.denoiser import Denoiser
from ..schedules import FlowSchedule, Schedule, VPSchedule
from .scheduler_grid import SchedulerGridSchedule


class PipelineFamily:
    """Base class; one subclass per family (see :data:`FAMILIES`)."""

    name: str = "family"
    network_attribute: str = "transformer"
    #: keyword names of ``encode_prompt``'s precomputed-embedding arguments this family accepts
    embedding_arguments: tuple[str, ...] = ("prompt_embeds", "negative_prompt_embeds")
    default_steps: int = 28
    default_guidance: float = 7.0

    # -- the denoiser ---------------------------------------------------------------------------
    def network(self, pipe):
        return getattr(pipe, self.network_attribute)

    def adapter(self) -> type:
        raise NotImplementedError

    def prediction(self, pipe) -> str:
        return "flow"

    def base_schedule(self, pipe) -> Schedule:
        cfg = pipe.scheduler.config
        return FlowSchedule(shift=cfg.get("shift", 1.0), num_train_timesteps=cfg.get("num_train_timesteps", 1000))

    def time_grid(self, pipe, schedule: Schedule, steps: int, shape: tuple[int, ...]) -> torch.Tensor:
        """The pipeline's own grid: the scheduler's sigmas (flow families; VP families override)."""
        pipe.scheduler.set_timesteps(steps, **self.scheduler_options(pipe, shape))
        return torch.as_tensor(pipe.scheduler.sigmas, dtype=torch.float64).cpu()

    def scheduler_options(self, pipe, shape: tuple[int, ...]) -> dict:
        return {}

    def latent_shape(self, pipe, height: int, width: int, num_frames: Optional[int]) -> tuple[int, ...]:
        factor = self.vae_scale_factor(pipe)
        return (self.network(pipe).config.in_channels, height // factor, width // factor)

    def vae_scale_factor(self, pipe) -> int:
        return int(getattr(pipe, "vae_scale_factor", 8))

    def default_size(self, pipe) -> tuple[int, int]:
        size = self.network(pipe).config.sample_size * self.vae_scale_factor(pipe)
        return size, size

    def decoder(self, pipe) -> Optional[torch.nn.Module]:
        from ..models.diffusers_adapters import VAEDecoder

        return VAEDecoder(pipe.vae) if getattr(pipe, "vae", None) is not None else None

    def denoiser_options(self, pipe, guidance_scale: Optional[float]) -> dict:
        return {}

    def denoiser(self, pipe, height=None, width=None, num_frames=None, guidance_scale=None,
                 condition_encoder=None) -> Denoiser:
        if height is None or width is None:
            default_h, default_w = self.default_size(pipe)
            height, width = height or default_h, width or default_w
        shape = self.latent_shape(pipe, height, width, num_frames)
        base = self.base_schedule(pipe)
        schedule = SchedulerGridSchedule(base, lambda steps: self.time_grid(pipe, base, steps, shape))
        return self.adapter()(
            self.network(pipe), schedule=schedule, prediction=self.prediction(pipe), shape=shape,
            condition_encoder=condition_encoder, decoder=self.decoder(pipe),
            **self.denoiser_options(pipe, guidance_scale),
        )

    # -- prompts --------------------------------------------------------------------------------
    def encode_prompt(self, pipe, prompt, negative_prompt, num_per_prompt: int, guidance: bool,
                      device, shape: tuple[int, ...], **embeddings) -> tuple[dict, Optional[dict]]:
        """(cond, null) as adapter keyword dicts, through ``pipe.encode_prompt``; null is None without CFG."""
        raise NotImplementedError

    # -- outputs --------------------------------------------------------------------------------
    def postprocess(self, pipe, images: torch.Tensor, output_type: str):
        """Decoded images in [0, 1] -> what the stock pipeline returns for ``output_type``."""
        return pipe.image_processor.postprocess(images * 2.0 - 1.0, output_type=output_type)

    def output(self, pipe, images, return_dict: bool):
        raise NotImplementedError

    def unpack_latents(self, pipe, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The stock pipeline's ``output_type="latent"`` layout -> model space (identity but for FLUX)."""
        return latents

    def pack_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Model space -> the stock pipeline's latent layout (identity but for FLUX)."""
        return latents


class VPFamily(PipelineFamily):
    """UNet families on a VP schedule: the grid is the scheduler's timesteps as times, then 0."""

    network_attribute = "unet"

    def prediction(self, pipe) -> str:
        from ..models.diffusers_adapters import PREDICTION_TYPES

        kind = pipe.scheduler.config.get("prediction_type", "epsilon")
        if kind not in PREDICTION_TYPES:
            raise DiffalignError(f"unsupported prediction_type {kind!r}; valid choices: {', '.join(PREDICTION_TYPES)}")
        return PREDICTION_TYPES[kind]

    def base_schedule(self, pipe) -> Schedule:
        return VPSchedule.from_scheduler(pipe.scheduler)

    def time_grid(self, pipe, schedule, steps, shape):
        grid = schedule.time_grid_from_scheduler(pipe.scheduler, steps)
        # DDIM with set_alpha_to_one=False (SD1.5's own config) stops at alphas_cumprod[0], i.e. diffusers
        # index 0 (t = 1/T), not at clean data; follow it so the output is the stock pipeline's
        final = getattr(pipe.scheduler, "final_alpha_cumprod", None)
        if final is not None and float(final) < 1.0:
            grid[-1] = schedule.time_from_model_timestep(0)
        return grid

    def adapter(self):
        from ..models.diffusers_adapters import UNetDenoiser

        return UNetDenoiser


def repeat_rows(tensor: Optional[torch.Tensor], rows: int) -> Optional[torch.Tensor]:
    if tensor is None or tensor.shape[0] == rows:
        return tensor
    return tensor.repeat(rows // tensor.shape[0], *([1] * (tensor.ndim - 1)))
