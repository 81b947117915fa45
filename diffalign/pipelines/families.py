"""The supported pipeline families, keyed by their denoising network's class (and, for the UNet, its config)."""

from __future__ import annotations

from typing import Any, Optional

from ..errors import DiffalignError
from .family import PipelineFamily
from .flux import FluxFamily
from .sd3 import SD3Family
from .stable_diffusion import StableDiffusionFamily, StableDiffusionXLFamily
from .wan import WanFamily

FAMILIES = {
    "sd": StableDiffusionFamily(),
    "sdxl": StableDiffusionXLFamily(),
    "sd3": SD3Family(),
    "flux": FluxFamily(),
    "wan": WanFamily(),
}

NETWORK_CLASSES = ("UNet2DConditionModel", "SD3Transformer2DModel", "FluxTransformer2DModel", "WanTransformer3DModel")


def family_key(network_class: str, config) -> Optional[str]:
    """Family name of a network class; SDXL's UNet is the one with ``addition_embed_type="text_time"``."""
    if network_class == "UNet2DConditionModel":
        return "sdxl" if _get(config, "addition_embed_type") == "text_time" else "sd"
    return {"SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux", "WanTransformer3DModel": "wan"}.get(network_class)


def family_of(pipe_or_network: Any) -> PipelineFamily:
    """The family of a diffusers pipeline (or of its denoising network)."""
    network = getattr(pipe_or_network, "unet", None) or getattr(pipe_or_network, "transformer", None) or pipe_or_network
    name = type(network).__name__
    key = family_key(name, getattr(network, "config", {}))
    if key is None:
        raise DiffalignError(f"unsupported diffusers network {name!r}; valid choices: {', '.join(NETWORK_CLASSES)}")
    return FAMILIES[key]


def _get(config, key):
    return config.get(key) if hasattr(config, "get") else getattr(config, key, None)
