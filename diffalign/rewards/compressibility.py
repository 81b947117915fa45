"""JPEG (in)compressibility rewards from DDPO.

Black, Janner, Du, Kostrikov, Levine, "Training Diffusion Models with Reinforcement Learning"
(ICLR 2024, arXiv:2305.13301), Sec. 6.1: the reward is the size of the image saved as a
quality-95 JPEG, in kilobytes; *compressibility* is minus that size, *incompressibility* the
size itself. As in the reference implementation (kvablack/ddpo-pytorch, ``rewards.py``), each
image is quantised to uint8 (``round(x * 255)``) before encoding and sizes are bytes / 1000.

Encoding is not differentiable, so these rewards only suit value-based methods (DDPO, best-of-N,
SMC-style samplers).
"""

from __future__ import annotations

import io

import torch
from PIL import Image

from ..errors import DiffalignError
from .base import Reward
from .registry import REWARDS

__all__ = ["JpegCompressibility", "JpegIncompressibility", "jpeg_sizes_kb"]

JPEG_QUALITY = 95


def jpeg_sizes_kb(images: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """JPEG file size in kB (bytes / 1000) of each float [0, 1] NCHW image, as float32 on its device.

    One-channel images are saved as grayscale, three-channel ones as RGB.
    """
    channels = images.shape[1]
    if channels not in (1, 3):
        raise DiffalignError(
            f"JPEG size needs images with 1 (grayscale) or 3 (RGB) channels; got shape {tuple(images.shape)}"
        )
    pixels = images.detach().float().mul(255.0).round().clamp(0, 255).to(torch.uint8).cpu()
    pixels = pixels.permute(0, 2, 3, 1).numpy()  # NHWC
    sizes = []
    for array in pixels:
        # uint8 HxW -> mode "L", uint8 HxWx3 -> mode "RGB"
        image = Image.fromarray(array[..., 0] if channels == 1 else array)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000.0)
    return torch.tensor(sizes, dtype=torch.float32, device=images.device)


def _check_quality(quality: object) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise DiffalignError(f"JPEG quality must be an integer in 1..100; got {quality!r}")
    return quality


@REWARDS.register("compressibility")
class JpegCompressibility(Reward):
    """Minus the JPEG size in kB: higher for images that compress well (DDPO's compressibility)."""

    name = "compressibility"
    differentiable = False
    sign = -1.0

    def __init__(self, quality: int = JPEG_QUALITY):
        super().__init__()
        self.quality = _check_quality(quality)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.sign * jpeg_sizes_kb(images, self.quality)


@REWARDS.register("incompressibility")
class JpegIncompressibility(JpegCompressibility):
    """The JPEG size in kB: higher for images that compress badly (DDPO's incompressibility)."""

    name = "incompressibility"
    sign = 1.0
