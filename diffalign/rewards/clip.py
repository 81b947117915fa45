"""The ``clip`` reward: CLIP score of each image against a text prompt.

CLIPScore (Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image Captioning",
EMNLP 2021, arXiv:2104.08718) in the form torchmetrics' ``CLIPScore`` computes it:
``max(100 * cos(E_image(x), E_text(prompt)), 0)``. CLIP alignment to a prompt is a common
reward in diffusion alignment (e.g. DRaFT, Clark et al. 2023, arXiv:2309.17400). Preprocessing
is done in torch (see :mod:`.clip_backbone`), so the score is differentiable in the images.

Each image is scored against its own prompt (``reward(images, prompts=[...])``, design.md §3b); the
``prompt=`` option is the default for prompt-free calls. Prompt embeddings are cached per prompt.
"""

from __future__ import annotations

import os

import torch

from ..errors import DiffalignError
from .base import Reward
from .clip_backbone import DEFAULT_MODEL, DEFAULT_PRETRAINED, load_clip_backbone
from .registry import REWARDS

__all__ = ["ClipScore"]

#: embedded CLIPs selectable with ``model=``: the shapes world's own (diffalign/data/shapes-clip)
EMBEDDED_CLIPS = ("shapes-clip",)


@REWARDS.register("clip")
class ClipScore(Reward):
    """``max(100 * cos(image, prompt), 0)`` with an open_clip model.

    Options: ``prompt`` (the default prompt of prompt-free calls; None: calls must pass prompts), ``model_name`` (open_clip name, default ``"ViT-L-14"``),
    ``model="shapes-clip"`` (the embedded CLIP of the shapes world instead of open_clip),
    ``pretrained`` (checkpoint file, or an open_clip tag such as ``"openai"`` -- tags need the
    network or a warm Hugging Face cache), ``quick_gelu`` (``None``: follow the tag / model config).
    """

    name = "clip"
    differentiable = True
    needs_prompts = True
    #: prompt embeddings kept for reuse; a prompt set larger than this is re-encoded as it cycles
    MAX_CACHED_PROMPTS = 4096

    def __init__(
        self,
        *,
        prompt: str | None = None,
        model_name: str = DEFAULT_MODEL,
        pretrained: str | os.PathLike | None = DEFAULT_PRETRAINED,
        quick_gelu: bool | None = None,
        model: str | None = None,
    ):
        super().__init__()
        if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
            raise DiffalignError(f"clip reward's default prompt must be a non-empty string (or None); got {prompt!r}")
        self.prompt = prompt
        if model not in (None, *EMBEDDED_CLIPS):
            raise DiffalignError(f"unknown clip model {model!r}; valid choices: {', '.join(EMBEDDED_CLIPS)} "
                                 "(or leave it unset and pass model_name/pretrained for open_clip)")
        if model is not None:  # an embedded CLIP (transformers CLIPModel) with the same backbone interface
            from ..shapes.clip import load_shapes_clip

            self.backbone = load_shapes_clip()
        else:
            self.backbone = load_clip_backbone(model_name, pretrained, quick_gelu)
        self._text_cache: dict[str, torch.Tensor] = {}

    def default_prompts(self, batch_size: int):
        return None if self.prompt is None else [self.prompt] * batch_size

    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """(B, D) normalised text embeddings, each distinct prompt encoded once."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if missing:
            if len(self._text_cache) + len(missing) > self.MAX_CACHED_PROMPTS:
                self._text_cache.clear()
            with torch.no_grad():
                encoded = self.backbone.encode_text(missing)
            self._text_cache.update(zip(missing, encoded))
        return torch.stack([self._text_cache[p] for p in prompts])

    def forward(self, images: torch.Tensor, prompts=None, metadata=None) -> torch.Tensor:
        image = self.backbone.encode_image(images)
        text = self.text_embeddings(prompts).to(device=image.device, dtype=image.dtype)
        score = 100.0 * (image * text).sum(dim=-1)
        return score.clamp(min=0.0).to(images.device)

    def extra_repr(self) -> str:
        return f"prompt={self.prompt!r}, model={self.backbone.model_name!r}"
