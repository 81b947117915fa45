"""Adapters from diffusers networks to :class:`Denoiser` -- no pipeline or scheduler is forked.

* :class:`UNetDenoiser` wraps a ``UNet2DConditionModel`` (SD1.5/SD2/SDXL family; eps or v prediction)
  under a :class:`VPSchedule`; continuous t becomes diffusers' timestep index ``t * T - 1``.
* :class:`SD3Denoiser` wraps an ``SD3Transformer2DModel`` (SD3 family; flow velocity) under a
  :class:`FlowSchedule`; t becomes ``1000 * t`` as in diffusers' FlowMatch schedulers.

Conditioning comes from a *condition encoder* (class embeddings for the embedded models; a prompt
encoder for text-to-image pipelines) that produces the network's keyword arguments as a dict of
batch-first tensors, so CFG and tree/particle samplers can index and concatenate it generically.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..errors import DiffalignError
from ..schedules import Schedule
from .conditioning import Condition
from .denoiser import Denoiser

# diffusers' prediction_type names -> ours
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "flow": "flow"}


class PixelDecoder(nn.Module):
    """Model space [-1, 1] -> reward space [0, 1] for pixel-space models."""

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return ((x0 + 1.0) / 2.0).clamp(0.0, 1.0)


class VAEDecoder(nn.Module):
    """Latents -> images in [0, 1] through a diffusers ``AutoencoderKL`` (scaling/shift from its config)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        shift = getattr(cfg, "shift_factor", None) or 0.0
        latents = latents / cfg.scaling_factor + shift
        images = self.vae.decode(latents.to(self.vae.dtype)).sample
        return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


class _DiffusersDenoiser(Denoiser):
    def __init__(
        self,
        network: nn.Module,
        schedule: Schedule,
        prediction: str,
        shape: tuple[int, ...],
        condition_encoder: Optional[nn.Module] = None,
        decoder: Optional[nn.Module] = None,
    ):
        super().__init__(schedule, prediction, shape)
        self.network = network
        self.condition_encoder = condition_encoder
        self.decoder = decoder if decoder is not None else nn.Identity()

    def encode_condition(self, cond, batch_size: int) -> Condition:
        # None stays None (unconditional): forward substitutes the null embedding, and CFG can see
        # that a single pass suffices.
        if cond is None or isinstance(cond, dict):
            return cond
        if self.condition_encoder is None:
            raise DiffalignError(f"this model has no condition encoder; cannot use cond={cond!r}")
        return self.condition_encoder.encode(cond, batch_size)

    def null_condition(self, batch_size: int) -> Condition:
        if self.condition_encoder is None:
            return None
        return self.condition_encoder.null(batch_size)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return self.decoder(x0)

    def _network_kwargs(self, cond: Condition, batch_size: int) -> dict:
        if cond is None:
            cond = self.null_condition(batch_size)
        return dict(cond or {})

    def _timestep(self, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.model_timestep(t).to(torch.float32)


class UNetDenoiser(_DiffusersDenoiser):
    """``UNet2DConditionModel`` as a denoiser (``cond`` keys are passed as keyword arguments)."""

    def forward(self, x, t, cond=None):
        kwargs = self._network_kwargs(cond, x.shape[0])
        if "encoder_hidden_states" not in kwargs:
            raise DiffalignError("UNetDenoiser needs conditioning with 'encoder_hidden_states'")
        dtype = self.network.dtype
        out = self.network(x.to(dtype), self._timestep(t), **_cast(kwargs, dtype)).sample
        return out.to(x.dtype)


class SD3Denoiser(_DiffusersDenoiser):
    """``SD3Transformer2DModel`` as a flow-velocity denoiser."""

    def forward(self, x, t, cond=None):
        kwargs = self._network_kwargs(cond, x.shape[0])
        missing = {"encoder_hidden_states", "pooled_projections"} - kwargs.keys()
        if missing:
            raise DiffalignError(f"SD3Denoiser needs conditioning with {sorted(missing)}")
        dtype = self.network.dtype
        out = self.network(hidden_states=x.to(dtype), timestep=self._timestep(t), **_cast(kwargs, dtype)).sample
        return out.to(x.dtype)


def _cast(kwargs: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in kwargs.items()}
