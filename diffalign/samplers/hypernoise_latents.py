"""HyperNoise for a stock few-step diffusers pipeline: modulated noise passed as ``latents=``.

``pipe(prompt_embeds=..., latents=hypernoise_latents(pipe, hypernetwork, ...))`` draws the pipeline's
own initial noise (its ``prepare_latents``, with the caller's generator), unpacks it where the family
packs its latents into tokens (FLUX's 2x2 patches), divides out the scheduler's ``init_noise_sigma``,
applies z -> z + f(z) (HyperNoise, arXiv:2508.09968), and packs it back. With a zero
hypernetwork the returned latents are exactly the ones the pipeline would draw from that generator.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..models.conditioning import Condition
from ..models.noise_hypernetwork import NoiseHypernetwork


def _network(pipe):
    return getattr(pipe, "transformer", None) or pipe.unet


def _packs_latents(pipe) -> bool:
    """FLUX-style pipelines pack 2x2 latent patches into tokens (and say so with _pack_latents)."""
    return callable(getattr(pipe, "_pack_latents", None)) and callable(getattr(pipe, "_unpack_latents", None))


def latent_channels(pipe) -> int:
    """``num_channels_latents`` of ``prepare_latents``: the network's input channels, over 4 when packed."""
    channels = _network(pipe).config.in_channels
    return channels // 4 if _packs_latents(pipe) else channels


@torch.no_grad()
def hypernoise_latents(
    pipe,
    hypernetwork: NoiseHypernetwork,
    batch_size: int,
    height: int,
    width: int,
    generator: Optional[torch.Generator] = None,
    cond: Condition = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Initial latents for ``pipe(..., latents=...)``: the pipeline's noise, modulated, packed as it expects."""
    device = _network(pipe).device
    channels = latent_channels(pipe)
    drawn = pipe.prepare_latents(batch_size, channels, height, width, dtype, device, generator)
    latents = drawn[0] if isinstance(drawn, tuple) else drawn  # FLUX also returns the latent image ids
    scale = float(getattr(pipe.scheduler, "init_noise_sigma", 1.0))
    if _packs_latents(pipe):
        z = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    else:
        z = latents
    z = z / scale if scale != 1.0 else z
    modulated = hypernetwork(z, cond)
    modulated = modulated * scale if scale != 1.0 else modulated
    if _packs_latents(pipe):
        return pipe._pack_latents(modulated, *modulated.shape[:2], *modulated.shape[2:])
    return modulated
