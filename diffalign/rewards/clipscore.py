"""The ``clipscore`` reward: CLIPScore with transformers' CLIP ViT-L/14 (the metric's usual model).

Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image Captioning" (EMNLP 2021,
arXiv:2104.08718), Eq. 1: ``CLIP-S(c, v) = w * max(cos(c, v), 0)``. Here ``w = 100``, the
scaling of torchmetrics' ``CLIPScore`` (whose default model, ``openai/clip-vit-large-patch14``,
is ours), so values match the numbers text-to-image papers report (about 20-35 for good
matches). The open_clip ``clip`` reward computes the same quantity on open_clip models; this one
loads the transformers checkpoint and its processor config, with preprocessing in torch
(:mod:`.pixel_preprocess`) so the score is differentiable in the pixels (zero gradient where the
cosine is clamped at 0).
"""

from __future__ import annotations

import os

import torch

from .hf_clip import HFClipReward
from .registry import REWARDS

__all__ = ["CLIPSCORE_MODEL", "HFClipScore"]

CLIPSCORE_MODEL = "openai/clip-vit-large-patch14"


@REWARDS.register("clipscore")
class HFClipScore(HFClipReward):
    """``100 * max(cos(E_img(image), E_txt(prompt)), 0)`` under transformers' CLIP ViT-L/14.

    Options: ``path`` (a local ``save_pretrained`` directory of a ``CLIPModel`` with its processor
    files), ``hub_id`` (default ``openai/clip-vit-large-patch14``), ``dtype`` (``float32``,
    ``bfloat16`` or ``float16`` weights).
    """

    name = "clipscore"

    def __init__(self, *, path: str | os.PathLike | None = None, hub_id: str = CLIPSCORE_MODEL,
                 dtype: str = "float32"):
        super().__init__(path=path, hub_id=hub_id, processor=None, dtype=dtype)

    def forward(self, images: torch.Tensor, prompts=None, metadata=None) -> torch.Tensor:
        return (100.0 * self.cosines(images, prompts)).clamp(min=0.0).to(images.device)
