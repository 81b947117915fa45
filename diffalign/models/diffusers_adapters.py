"""Adapters from diffusers networks to :class:`Denoiser` -- no pipeline or scheduler is forked.

One adapter per network family; each one holds, in one place, the family's time mapping (continuous
t -> the network's timestep), its conditioning keys and shapes, and any latent layout change:

* :class:`UNetDenoiser` -- ``UNet2DConditionModel`` (SD1.5/SD2 and SDXL; eps or v prediction) under a
  :class:`VPSchedule`; t becomes diffusers' timestep index ``t * T - 1``. SDXL's UNet (config
  ``addition_embed_type="text_time"``) also takes the pooled text embedding and the six ``time_ids``.
* :class:`SD3Denoiser` -- ``SD3Transformer2DModel`` (flow velocity); t becomes ``1000 t``.
* :class:`FluxDenoiser` -- ``FluxTransformer2DModel``: model space is the *unpacked* latent (C, H, W);
  the adapter packs 2x2 patches into tokens, builds the image/text position ids and feeds the
  distilled guidance scale; its network takes t itself (it scales by 1000 inside).
* :class:`WanDenoiser` -- ``WanTransformer3DModel`` (Wan 2.1 text-to-video, flow velocity) on
  (C, F, H, W) video latents; t becomes ``1000 t``.

Latent scaling/shift and decoding live in the decoders: :class:`VAEDecoder` (``AutoencoderKL``:
``latents / scaling_factor + shift_factor``) and :class:`WanVAEDecoder` (per-channel mean/std).

Conditioning comes from a *condition encoder* (class embeddings for the embedded models; a prompt
encoder for text-to-image pipelines, :mod:`diffalign.pipelines`) that produces the network's keyword
arguments as a dict of batch-first tensors, so CFG and tree/particle samplers can index and
concatenate it generically. A dict passed directly is checked against :meth:`condition_shapes`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..errors import DiffalignError
from ..schedules import Schedule
from .conditioning import Condition, broadcast_condition, check_condition
from .denoiser import Denoiser

# diffusers' prediction_type names -> ours
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "flow": "flow"}


class PixelDecoder(nn.Module):
    """Model space [-1, 1] -> reward space [0, 1] for pixel-space models."""

    #: where the data lies in model space (values outside are clamped on decoding)
    data_range = (-1.0, 1.0)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return ((x0 + 1.0) / 2.0).clamp(0.0, 1.0)


class VAEDecoder(nn.Module):
    """Latents -> images in [0, 1] through a diffusers ``AutoencoderKL`` (scaling/shift from its config).

    The pipelines scale latents as ``z * scaling_factor`` (SD) or ``(z - shift) * scaling_factor``
    (SD3, FLUX); decoding inverts that.
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        shift = getattr(cfg, "shift_factor", None) or 0.0
        latents = latents / cfg.scaling_factor + shift
        images = self.vae.decode(latents.to(self.vae.dtype)).sample
        return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


class WanVAEDecoder(nn.Module):
    """Wan video latents (B, C, F, H, W) -> frames in [0, 1] as (B, 3, F', H', W').

    Wan normalises each latent channel: z_model = (z - mean) / std, so decoding uses z = z_model std + mean.
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        view = (1, cfg.z_dim, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean, device=latents.device, dtype=latents.dtype).view(view)
        std = torch.tensor(cfg.latents_std, device=latents.device, dtype=latents.dtype).view(view)
        video = self.vae.decode((latents * std + mean).to(self.vae.dtype)).sample
        return ((video.float() + 1.0) / 2.0).clamp(0.0, 1.0)


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
        self._dtype_cache: tuple[torch.dtype, torch.dtype] | None = None  # (first parameter's dtype, network dtype)

    @property
    def network_dtype(self) -> torch.dtype:
        """The network's compute dtype. diffusers' ``ModelMixin.dtype`` walks every submodule (about 2 ms
        per read on the 250k-parameter digits UNet, a quarter of a one-row model call on CPU), so it is
        read once and cached, keyed on the first parameter's dtype: a later ``.to(dtype)`` -- or layerwise
        casting, which changes the stored dtype -- refreshes it."""
        first = next(self.network.parameters()).dtype
        if self._dtype_cache is None or self._dtype_cache[0] != first:
            self._dtype_cache = (first, self.network.dtype)
        return self._dtype_cache[1]

    # -- conditioning --------------------------------------------------------------------------
    def condition_shapes(self) -> dict[str, tuple]:
        """The network's conditioning keys and shapes ("B": batch, None: any length)."""
        raise NotImplementedError

    def encode_condition(self, cond, batch_size: int) -> Condition:
        # None stays None (unconditional): forward substitutes the null embedding, and CFG can see
        # that a single pass suffices.
        if cond is None:
            return None
        if isinstance(cond, dict):
            check_condition(type(self).__name__, cond, self.condition_shapes(), None)
            return broadcast_condition(cond, batch_size)
        if self.condition_encoder is None:
            check_condition(f"{type(self).__name__} (no text encoder or class embeddings loaded)", cond,
                            self.condition_shapes(), batch_size)
        return broadcast_condition(self.condition_encoder.encode(cond, batch_size), batch_size)

    def null_condition(self, batch_size: int) -> Condition:
        if self.condition_encoder is None:
            return None
        return broadcast_condition(self.condition_encoder.null(batch_size), batch_size)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return self.decoder(x0)

    @property
    def data_range(self) -> Optional[tuple[float, float]]:
        # a pixel decoder declares its range; latents (VAE decoders, nn.Identity) have none
        return getattr(self.decoder, "data_range", None)

    def _network_kwargs(self, cond: Condition, batch_size: int) -> dict:
        if cond is None:
            cond = self.null_condition(batch_size)
        check_condition(type(self).__name__, cond, self.condition_shapes(), batch_size)
        return dict(broadcast_condition(cond, batch_size))

    def _timestep(self, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.model_timestep(t).to(torch.float32)


class UNetDenoiser(_DiffusersDenoiser):
    """``UNet2DConditionModel`` as a denoiser: SD1.5/SD2 (prompt embeddings) and SDXL (+ pooled, time ids)."""

    def condition_shapes(self):
        cfg = self.network.config
        width = cfg.cross_attention_dim if isinstance(cfg.cross_attention_dim, int) else None
        shapes = {"encoder_hidden_states": ("B", None, width)}
        if cfg.addition_embed_type == "text_time":  # SDXL: pooled text embedding + 6 micro-conditioning ids
            pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            shapes.update(text_embeds=("B", pooled), time_ids=("B", 6))
        return shapes

    def forward(self, x, t, cond=None):
        kwargs = _cast(self._network_kwargs(cond, x.shape[0]), self.network_dtype)
        added = {key: kwargs.pop(key) for key in ("text_embeds", "time_ids") if key in kwargs}
        out = self.network(x.to(self.network_dtype), self._timestep(t), added_cond_kwargs=added or None, **kwargs).sample
        return out.to(x.dtype)


class SD3Denoiser(_DiffusersDenoiser):
    """``SD3Transformer2DModel`` as a flow-velocity denoiser."""

    def condition_shapes(self):
        cfg = self.network.config
        return {"encoder_hidden_states": ("B", None, cfg.joint_attention_dim),
                "pooled_projections": ("B", cfg.pooled_projection_dim)}

    def forward(self, x, t, cond=None):
        kwargs = _cast(self._network_kwargs(cond, x.shape[0]), self.network_dtype)
        out = self.network(hidden_states=x.to(self.network_dtype), timestep=self._timestep(t), **kwargs).sample
        return out.to(x.dtype)


class FluxDenoiser(_DiffusersDenoiser):
    """``FluxTransformer2DModel`` (FLUX.1) as a flow-velocity denoiser on unpacked latents (C, H, W).

    Args:
        guidance: the distilled guidance scale fed to guidance-embedding models (FLUX.1-dev); ignored
            by models without ``guidance_embeds`` (FLUX.1-schnell). True CFG still composes via
            :class:`CFGDenoiser`.
    """

    def __init__(self, *args, guidance: float = 3.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.guidance = float(guidance)

    def condition_shapes(self):
        cfg = self.network.config
        return {"encoder_hidden_states": ("B", None, cfg.joint_attention_dim),
                "pooled_projections": ("B", cfg.pooled_projection_dim)}

    def _timestep(self, t):
        return t.to(torch.float32)  # the network multiplies by 1000 itself

    def forward(self, x, t, cond=None):
        dtype = self.network_dtype
        kwargs = _cast(self._network_kwargs(cond, x.shape[0]), dtype)
        batch, channels, height, width = x.shape
        tokens = pack_latents(x.to(dtype))
        guidance = None
        if self.network.config.guidance_embeds:
            guidance = torch.full((batch,), self.guidance, device=x.device, dtype=torch.float32)
        text_ids = torch.zeros(kwargs["encoder_hidden_states"].shape[1], 3, device=x.device, dtype=dtype)
        out = self.network(
            hidden_states=tokens, timestep=self._timestep(t).to(dtype), guidance=guidance,
            img_ids=latent_image_ids(height // 2, width // 2, x.device, dtype), txt_ids=text_ids, **kwargs,
        ).sample
        return unpack_latents(out, channels, height, width).to(x.dtype)


class WanDenoiser(_DiffusersDenoiser):
    """``WanTransformer3DModel`` (Wan 2.1 text-to-video) as a flow-velocity denoiser on (C, F, H, W)."""

    def condition_shapes(self):
        return {"encoder_hidden_states": ("B", None, self.network.config.text_dim)}

    def forward(self, x, t, cond=None):
        kwargs = _cast(self._network_kwargs(cond, x.shape[0]), self.network_dtype)
        out = self.network(hidden_states=x.to(self.network_dtype), timestep=self._timestep(t), **kwargs).sample
        return out.to(x.dtype)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): FLUX's 2x2 patch tokens (its pipeline's layout)."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents`."""
    b = tokens.shape[0]
    return tokens.view(b, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, channels, height, width)


def latent_image_ids(rows: int, cols: int, device, dtype) -> torch.Tensor:
    """FLUX's (rows * cols, 3) position ids of the packed latent tokens: (0, row, col)."""
    ids = torch.zeros(rows, cols, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(rows, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(cols, device=device, dtype=dtype)[None, :]
    return ids.reshape(rows * cols, 3)


def _cast(kwargs: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in kwargs.items()}
