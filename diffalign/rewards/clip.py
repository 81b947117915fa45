"""The ``clip`` reward: CLIP score of each image against a text prompt.

CLIPScore (Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image Captioning",
EMNLP 2021, arXiv:2104.08718) in the form torchmetrics' ``CLIPScore`` computes it:
``max(100 * cos(E_image(x), E_text(prompt)), 0)``. CLIP alignment to a prompt is a common
reward in diffusion alignment (e.g. DRaFT, Clark et al. 2023, arXiv:2309.17400). Preprocessing
is done in torch (see :mod:`.clip_backbone`), so the score is differentiable in the images.
"""

from __future__ import annotations

import os

import torch

from ..errors import DiffalignError
from .base import Reward
from .clip_backbone import DEFAULT_MODEL, DEFAULT_PRETRAINED, load_clip_backbone
from .registry import REWARDS

__all__ = ["ClipScore"]


@REWARDS.register("clip")
class ClipScore(Reward):
    """``max(100 * cos(image, prompt), 0)`` with an open_clip model.

    Options: ``prompt`` (required), ``model_name`` (open_clip name, default ``"ViT-L-14"``),
    ``pretrained`` (checkpoint file, or an open_clip tag such as ``"openai"`` -- tags need the
    network or a warm Hugging Face cache), ``quick_gelu`` (``None``: follow the tag / model config).
    """

    name = "clip"
    differentiable = True

    def __init__(
        self,
        *,
        prompt: str,
        model_name: str = DEFAULT_MODEL,
        pretrained: str | os.PathLike | None = DEFAULT_PRETRAINED,
        quick_gelu: bool | None = None,
    ):
        super().__init__()
        if not isinstance(prompt, str) or not prompt.strip():
            raise DiffalignError(f"clip reward needs a non-empty text prompt; got {prompt!r}")
        self.prompt = prompt
        self.backbone = load_clip_backbone(model_name, pretrained, quick_gelu)
        with torch.no_grad():
            text = self.backbone.encode_text([prompt])[0]
        self.register_buffer("text_embedding", text, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = self.backbone.encode_image(images)
        score = 100.0 * (image * self.text_embedding).sum(dim=-1)
        return score.clamp(min=0.0).to(images.device)

    def extra_repr(self) -> str:
        return f"prompt={self.prompt!r}, model={self.backbone.model_name!r}"
