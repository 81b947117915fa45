"""Differentiable image preprocessing for hub reward models: resize, centre-crop or pad, normalise.

The reference pipelines of PickScore, CLIPScore (transformers ``CLIPImageProcessor``) and HPSv2
(torchvision transforms in the HPSv2 fork of open_clip) take PIL images, which cuts the gradient
with respect to the pixels. :class:`PixelPreprocess` does the same steps on float ``[0, 1]`` NCHW
tensors, so reward backpropagation (DRaFT, AlignProp, ReNO) reaches the images:

- ``mode="shortest"`` (CLIP processors, torchvision ``Resize(n) + CenterCrop(n)``): resize so the
  shorter side is ``size``, the longer side ``int(size * long / short)`` as transformers and
  torchvision truncate it, then centre-crop ``crop`` at offset ``(H - h) // 2`` (transformers'
  ``center_crop``) or ``round((H - h) / 2)`` (torchvision's ``CenterCrop``, ``crop_offset="round"``);
- ``mode="longest"`` (HPSv2's ``ResizeMaxSize``): resize so the longer side is ``size`` and pad the
  rest with ``fill`` (black), centred;
- normalise with the checkpoint's mean and std.

Resizing uses ``F.interpolate(..., antialias=True)``: torch's antialiased bicubic/bilinear kernels
are the separable PIL filters (bicubic with a = -0.5). Like PIL, the width is resampled first and
the intermediate image clamped to [0, 1] (PIL clamps to uint8) before the height pass. What remains
different from PIL is its 8-bit rounding: PIL resizes RGB images in uint8, so the reference is
quantised to 1/255 after each pass. ``tests/rewards/test_pixel_preprocess.py``
measures the gap on random images (one grey level, 1/255, before normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DiffalignError

__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "PixelPreprocess", "PreprocessConfig", "to_rgb"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# PIL resample codes as stored in preprocessor_config.json ("resample": 3 is bicubic)
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class PreprocessConfig:
    """What a reward model's image processor does, in numbers."""

    size: int = 224
    crop: tuple[int, int] = (224, 224)
    mode: str = "shortest"  # "shortest": resize shorter side + centre-crop; "longest": resize longer side + pad
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD
    fill: float = 0.0
    #: centre-crop offset: "floor" is transformers' (H - h) // 2, "round" torchvision's round((H - h) / 2)
    crop_offset: str = "floor"

    def __post_init__(self):
        if self.mode not in ("shortest", "longest"):
            raise DiffalignError(f"preprocess mode must be 'shortest' or 'longest'; got {self.mode!r}")
        if self.interpolation not in ("bicubic", "bilinear"):
            raise DiffalignError(f"preprocess interpolation must be 'bicubic' or 'bilinear'; got {self.interpolation!r}")

    @classmethod
    def from_image_processor(cls, processor) -> "PreprocessConfig":
        """The config of a transformers ``CLIPImageProcessor`` (or its PIL twin): shortest edge, crop, mean/std."""
        size = processor.size
        if not isinstance(size, int):  # a dict (transformers 4) or a SizeDict (transformers 5)
            size = _field(size, "shortest_edge") or _field(size, "height")
        crop = getattr(processor, "crop_size", None)
        crop = (int(size), int(size)) if crop is None else (
            (int(crop), int(crop)) if isinstance(crop, int) else (int(_field(crop, "height")), int(_field(crop, "width"))))
        resample = getattr(processor, "resample", 3)
        resample = getattr(resample, "value", resample)  # PIL enum or int
        interpolation = _PIL_RESAMPLE.get(int(resample) if resample is not None else 3, "bicubic")
        return cls(size=int(size), crop=crop, mode="shortest", interpolation=interpolation,
                   mean=tuple(float(m) for m in processor.image_mean), std=tuple(float(s) for s in processor.image_std))


def _field(mapping, key):
    """``mapping[key]`` of a dict or a transformers ``SizeDict``; None when absent."""
    if isinstance(mapping, dict):
        return mapping.get(key)
    return getattr(mapping, key, None)


def to_rgb(images: torch.Tensor, name: str) -> torch.Tensor:
    """(B, 1|3, H, W) -> (B, 3, H, W): grey images are repeated to three channels."""
    channels = images.shape[1]
    if channels == 1:
        return images.expand(-1, 3, -1, -1)
    if channels != 3:
        raise DiffalignError(f"reward {name!r} expects images with 1 or 3 channels; got shape {tuple(images.shape)}")
    return images


class PixelPreprocess(nn.Module):
    """Float [0, 1] (B, 1|3, H, W) -> the normalised (B, 3, h, w) input of a reward model, differentiably."""

    def __init__(self, config: PreprocessConfig, name: str = "reward"):
        super().__init__()
        self.config = config
        self.name = name
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def _resize(self, images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        # PIL resamples in two passes, width first, and clamps the intermediate image to 8 bits; on
        # high-frequency content the clamp between passes matters (up to 20/255 without it), so do the same
        height, width = images.shape[-2:]
        for target in ((height, size[1]), (size[0], size[1])):
            if tuple(images.shape[-2:]) != tuple(target):
                images = F.interpolate(images, size=target, mode=self.config.interpolation, align_corners=False,
                                       antialias=True).clamp(0.0, 1.0)
        return images

    def resize_and_crop(self, images: torch.Tensor) -> torch.Tensor:
        """The geometric steps only, in [0, 1] pixel space (what the reference does before normalising)."""
        cfg = self.config
        height, width = images.shape[-2:]
        if cfg.mode == "shortest":
            short, long = (height, width) if height <= width else (width, height)
            new_long = int(cfg.size * long / short)
            size = (cfg.size, new_long) if height <= width else (new_long, cfg.size)
            images = self._resize(images, size)
            out_h, out_w = cfg.crop
            h, w = images.shape[-2:]
            if h < out_h or w < out_w:  # transformers pads a too-small image with zeros before cropping
                pad_h, pad_w = max(out_h - h, 0), max(out_w - w, 0)
                images = F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
                h, w = images.shape[-2:]
            if cfg.crop_offset == "round":
                top, left = int(round((h - out_h) / 2.0)), int(round((w - out_w) / 2.0))
            else:
                top, left = (h - out_h) // 2, (w - out_w) // 2
            return images[..., top:top + out_h, left:left + out_w]
        # "longest": scale the longer side to size, keep the aspect ratio, pad the rest centred
        scale = cfg.size / max(height, width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        images = self._resize(images, (new_h, new_w))
        pad_h, pad_w = cfg.size - new_h, cfg.size - new_w
        if pad_h or pad_w:
            images = F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=cfg.fill)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = to_rgb(images, self.name).to(device=self.mean.device, dtype=self.mean.dtype)
        return (self.resize_and_crop(images) - self.mean) / self.std
