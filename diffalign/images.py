"""Saving samples as PNG grids (PIL only; no torchvision needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch

# Small images are enlarged (nearest neighbour) until a tile is about this many pixels across, so
# 8x8 digits are visible; images this size or larger are kept at their own size.
TARGET_TILE_PX = 64


def auto_scale(height: int, width: int) -> int:
    return max(1, TARGET_TILE_PX // max(height, width))


def grid_image(images: torch.Tensor, nrow: Optional[int] = None, scale: Optional[int] = None, padding: Optional[int] = None,
               row_labels: Optional[Sequence[str]] = None):
    """Float [0, 1] NCHW images -> a PIL image grid, ``nrow`` images per row, each enlarged ``scale``x
    (default: to about 64 px for small images, 1x for large ones), with optional text to the left of
    each row."""
    from PIL import Image

    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    scale = auto_scale(h, w) if scale is None else scale
    # enlarged tiles get separators half a source pixel wide (4 px for 8x8 digits at 8x): one pixel
    # between 64-px tiles let neighbouring digits run together
    padding = max(1, scale // 2) if padding is None else padding
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
    grid = Image.fromarray(array[..., 0] if c == 1 else array)
    if row_labels is not None:
        grid = _with_row_labels(grid, list(row_labels), rows, cell_h, padding)
    return grid


def _with_row_labels(grid, labels: list[str], rows: int, cell_h: int, padding: int):
    from PIL import Image, ImageDraw, ImageFont

    if len(labels) != rows:
        raise ValueError(f"row_labels has {len(labels)} labels for a grid of {rows} rows")
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(grid)
    margin = 8 + max((int(draw.textlength(text, font=font)) for text in labels), default=0)
    white = 255 if grid.mode == "L" else (255, 255, 255)
    labelled = Image.new(grid.mode, (grid.width + margin, grid.height), white)
    labelled.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(labelled)
    for r, text in enumerate(labels):
        middle = padding + r * cell_h + cell_h // 2
        draw.text((4, middle), text, fill=0 if grid.mode == "L" else (0, 0, 0), font=font, anchor="lm")
    return labelled


def save_grid(images: torch.Tensor, path, nrow: Optional[int] = None, scale: Optional[int] = None,
              row_labels: Optional[Sequence[str]] = None) -> Path:
    """Write float [0, 1] NCHW images as one PNG grid, atomically (a crash never leaves a truncated PNG).

    Args:
        images: e.g. ``model.decode(out.samples)``.
        nrow: images per row (default: a square grid).
        scale: integer enlargement (default: small images to about 64 px, large ones unchanged).
        row_labels: one text per row, drawn to the left of it.
    """
    import io

    from .atomic import atomic_write_bytes

    buffer = io.BytesIO()
    grid_image(images, nrow=nrow, scale=scale, row_labels=row_labels).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
