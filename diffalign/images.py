"""Saving samples as PNG grids (PIL only; no torchvision needed)."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def grid_image(images: torch.Tensor, nrow: int | None = None, scale: int = 8, padding: int = 1):
    """Float [0, 1] NCHW images -> a PIL image grid, each image upscaled ``scale``x (nearest)."""
    from PIL import Image

    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    cell_h, cell_w = h * scale + padding, w * scale + padding
    canvas = torch.ones(c, rows * cell_h + padding, nrow * cell_w + padding)
    big = images.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * cell_h, padding + col * cell_w
        canvas[:, top : top + h * scale, left : left + w * scale] = big[i]
    array = (canvas * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if c == 1 else array)


def save_grid(images: torch.Tensor, path, nrow: int | None = None, scale: int = 8) -> Path:
    """Write a PNG grid atomically (a crash never leaves a truncated PNG)."""
    import io

    from .atomic import atomic_write_bytes

    buffer = io.BytesIO()
    grid_image(images, nrow=nrow, scale=scale).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
