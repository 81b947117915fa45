"""The ``pickscore`` reward: PickScore, a CLIP-H fine-tuned on human preferences (Pick-a-Pic).

Kirstain et al., "Pick-a-Pic: An Open Dataset of User Preferences for Text-to-Image Generation"
(NeurIPS 2023, arXiv:2305.01569), §4: the score of image ``y`` for prompt ``x`` is
``s(x, y) = T * <E_txt(x), E_img(y)>`` with unit-norm embeddings and the learned CLIP temperature
``T = exp(logit_scale)`` (about 100), i.e. the logit of the preference model. Used as the
reward of Flow-GRPO (arXiv:2505.05470), DiffusionNFT and others.

Weights: ``yuvalkirstain/PickScore_v1`` (a transformers ``CLIPModel``); tokenizer and image
preprocessing: the CLIP-H processor ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (shortest edge 224,
bicubic, centre-crop 224, OpenAI mean/std), as the paper's code loads them. Preprocessing runs in
torch (:mod:`.pixel_preprocess`), so the score is differentiable in the pixels.
"""

from __future__ import annotations

import os

import torch

from .hf_clip import HFClipReward
from .registry import REWARDS

__all__ = ["PickScore", "PICKSCORE_MODEL", "PICKSCORE_PROCESSOR"]

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


@REWARDS.register("pickscore")
class PickScore(HFClipReward):
    """``exp(logit_scale) * cos(E_img(image), E_txt(prompt))`` under the PickScore_v1 CLIP-H.

    Options: ``path`` (a local directory with the model, and the tokenizer/preprocessor files or
    not: then they come from ``processor``), ``hub_id`` (default ``yuvalkirstain/PickScore_v1``),
    ``processor`` (hub id or directory of the tokenizer and preprocessor config, default the
    CLIP-H one), ``dtype`` (``float32``, ``bfloat16`` or ``float16`` weights).
    """

    name = "pickscore"

    def __init__(self, *, path: str | os.PathLike | None = None, hub_id: str = PICKSCORE_MODEL,
                 processor: str = PICKSCORE_PROCESSOR, dtype: str = "float32"):
        super().__init__(path=path, hub_id=hub_id, processor=processor, dtype=dtype)

    def forward(self, images: torch.Tensor, prompts=None, metadata=None) -> torch.Tensor:
        scale = self.clip.model.logit_scale.detach().float().exp()
        return (scale * self.cosines(images, prompts)).to(images.device)
