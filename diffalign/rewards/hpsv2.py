"""The ``hpsv2`` reward: Human Preference Score v2.1, an open_clip ViT-H-14 fine-tuned on HPD v2.

Wu et al., "Human Preference Score v2: A Solid Benchmark for Evaluating Human Preferences of
Text-to-Image Synthesis" (arXiv:2306.09341), §4: the score is the cosine between the image and
text embeddings of the fine-tuned CLIP, ``<E_img(x), E_txt(p)>`` with unit-norm embeddings (the
official ``hpsv2.score`` reports this diagonal of ``image_features @ text_features.T``, about
0.2-0.35). HPSv2.1 is the reward of DanceGRPO (arXiv:2505.07818) and MixGRPO.

Weights: ``HPS_v2.1_compressed.pt`` in the hub repo ``xswu/HPSv2``, a ``{"state_dict": ...}``
checkpoint of open_clip's ``ViT-H-14`` (the HPSv2 package only vendors open_clip; the module
names are open_clip's, so plain ``open_clip.create_model("ViT-H-14")`` loads it). The HPSv2
evaluation transform resizes the *longer* side to 224 (bicubic) and pads the rest black, then
normalises with the OpenAI CLIP mean/std; :mod:`.pixel_preprocess` does it in torch, so the
score is differentiable in the pixels. The ``hpsv2`` package itself is not used: it pins and
vendors its own open_clip and downloads at import of its scorer.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DiffalignError
from .base import Reward
from .checkpoints import load_state_exactly
from .clip_backbone import import_open_clip
from .hf_clip import hub_load, resolve_source, weights_dtype
from .pixel_preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PixelPreprocess, PreprocessConfig
from .registry import REWARDS
from .text_cache import TextEmbeddingCache

__all__ = ["HPSv2", "HPSV2_FILE", "HPSV2_HUB_ID"]

HPSV2_HUB_ID = "xswu/HPSv2"
HPSV2_FILE = "HPS_v2.1_compressed.pt"


@REWARDS.register("hpsv2")
class HPSv2(Reward):
    """``cos(E_img(image), E_txt(prompt))`` under the HPSv2.1 ViT-H-14.

    Options: ``path`` (the checkpoint file, or a directory holding ``filename``), ``hub_id``
    (default ``xswu/HPSv2``), ``filename`` (default ``HPS_v2.1_compressed.pt``; ``HPS_v2_compressed.pt``
    is HPSv2.0), ``model_name`` (open_clip architecture, default ``ViT-H-14``), ``dtype`` (``float32``,
    ``bfloat16`` or ``float16`` weights).
    """

    name = "hpsv2"
    differentiable = True
    needs_prompts = True

    def __init__(self, *, path: str | os.PathLike | None = None, hub_id: str = HPSV2_HUB_ID,
                 filename: str = HPSV2_FILE, model_name: str = "ViT-H-14", dtype: str = "float32"):
        super().__init__()
        torch_dtype = weights_dtype(self.name, dtype)
        open_clip = import_open_clip()
        if model_name not in open_clip.list_models():
            raise DiffalignError(f"reward 'hpsv2': unknown open_clip model {model_name!r} (HPSv2 uses 'ViT-H-14')")
        checkpoint = self._checkpoint(path, hub_id, filename)
        model = open_clip.create_model(model_name, pretrained=None)
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            # checkpoints saved from DistributedDataParallel carry a "module." prefix
            state = {k.removeprefix("module."): v for k, v in state.items()}
        except (RuntimeError, KeyError, AttributeError, pickle.UnpicklingError, OSError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DiffalignError(f"reward 'hpsv2': cannot read {checkpoint}: {first}") from None
        load_state_exactly(model, state, self.name, checkpoint)
        self.model = model.to(torch_dtype).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        size = model.visual.image_size
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.preprocess = PixelPreprocess(
            PreprocessConfig(size=size, crop=(size, size), mode="longest", interpolation="bicubic",
                             mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD), name=self.name)
        self.source = str(checkpoint)
        self._texts = TextEmbeddingCache()
        self.eval()  # a fixed scoring function: no dropout, whatever the caller's mode

    def _checkpoint(self, path, hub_id: str, filename: str) -> str:
        if path is not None and Path(path).expanduser().is_file():
            return str(Path(path).expanduser())
        if path is not None:
            if not Path(path).expanduser().exists():
                raise DiffalignError(f"reward 'hpsv2': path {str(path)!r} does not exist (pass the {filename} "
                                     "checkpoint file or the directory holding it)")
            directory = Path(resolve_source(self.name, path, hub_id))
            if not (directory / filename).is_file():
                raise DiffalignError(f"reward 'hpsv2': {directory} has no {filename} (the HPSv2.1 checkpoint from "
                                     f"the hub repo {hub_id})")
            return str(directory / filename)
        repo = resolve_source(self.name, None, hub_id)

        def download(repo_id: str) -> str:
            from huggingface_hub import hf_hub_download

            return hf_hub_download(repo_id, filename)

        return hub_load(self.name, f"checkpoint {filename} of", repo, download)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        device = self.model.logit_scale.device
        return F.normalize(self.model.encode_text(self.tokenizer(list(texts)).to(device)).float(), dim=-1)

    def forward(self, images: torch.Tensor, prompts=None, metadata=None) -> torch.Tensor:
        weight = self.model.logit_scale
        pixels = self.preprocess(images).to(device=weight.device, dtype=weight.dtype)
        image = F.normalize(self.model.encode_image(pixels).float(), dim=-1)
        text = self._texts(prompts, self.encode_text).to(image.device)
        return (image * text).sum(dim=-1).to(images.device)

    def extra_repr(self) -> str:
        return f"source={self.source!r}"
