"""The ``imagereward`` reward: ImageReward, a BLIP-based human-preference model, on transformers' BLIP.

Xu et al., "ImageReward: Learning and Evaluating Human Preferences for Text-to-Image Generation"
(NeurIPS 2023, arXiv:2304.05977), §3: the prompt is encoded by BLIP's BERT text encoder with
cross-attention to the ViT-L/16 image tokens; the [CLS] feature goes through an MLP to one number,
standardised with the training set's mean and std:

    r(x, p) = (MLP(T(p | V(x))[CLS]) - 0.16717362830052426) / 1.0333394966054072

The reference code (the ``image-reward`` package) vendors BLIP's original modules and pins its own
transformers; it is not used. Its architecture *is* transformers' ``BlipVisionModel`` (ViT, LayerNorm
eps 1e-6) and ``BlipTextModel`` (BERT with cross-attention, no pooler), so the released checkpoint
``ImageReward.pt`` (hub repo ``THUDM/ImageReward``, next to ``med_config.json``) is loaded into
those classes after renaming the vision keys the way transformers' own BLIP conversion script does
(``blocks`` -> ``encoder.layers``, ``attn.proj`` -> ``self_attn.projection``, ``norm1`` ->
``layer_norm1``, ...); the text keys already match. The tokenizer is ``bert-base-uncased`` (prompts
padded to 35 tokens, as the reference scores them). The image transform (``Resize(224, bicubic)``,
``CenterCrop(224)``, OpenAI CLIP mean/std, torchvision on PIL) runs in torch
(:mod:`.pixel_preprocess`), so the score is differentiable in the pixels.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import DiffalignError
from .base import Reward
from .checkpoints import load_state_exactly
from .hf_clip import hub_load, resolve_source, weights_dtype
from .pixel_preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PixelPreprocess, PreprocessConfig
from .registry import REWARDS
from .text_cache import TextEmbeddingCache

__all__ = ["IMAGEREWARD_HUB_ID", "ImageReward", "ImageRewardModel", "convert_imagereward_state_dict"]

IMAGEREWARD_HUB_ID = "THUDM/ImageReward"
IMAGEREWARD_FILE = "ImageReward.pt"
IMAGEREWARD_TOKENIZER = "google-bert/bert-base-uncased"
# the standardisation of the released model (ImageReward.py: self.mean, self.std)
REWARD_MEAN, REWARD_STD = 0.16717362830052426, 1.0333394966054072
PROMPT_TOKENS = 35
# BLIP ViT-L/16 at 224 px, as ImageReward builds it (vit="large"); a vision_config.json next to the
# checkpoint (in path= or in the hub repo) overrides it (tests use that for tiny models)
VIT_L16 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
               image_size=224, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu")
# checkpoint entries ImageReward's BLIP carries but scoring never uses
_UNUSED = ("blip.vision_proj.", "blip.text_proj.", "blip.itm_head.", "blip.text_encoder.pooler.",
           "blip.text_encoder.embeddings.position_ids")
_VISION_RENAMES = [  # original BLIP ViT name -> transformers BlipVisionModel name (applied in order)
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^norm\.", "post_layernorm."),
    (r"^blocks\.(\d+)\.", r"encoder.layers.\1."),
    (r"\.attn\.proj\.", ".self_attn.projection."),
    (r"\.attn\.qkv\.", ".self_attn.qkv."),
    (r"\.norm1\.", ".layer_norm1."),
    (r"\.norm2\.", ".layer_norm2."),
]


class ImageRewardModel(nn.Module):
    """BLIP's ViT and cross-attending BERT (transformers classes) plus ImageReward's MLP head."""

    def __init__(self, vision_config, text_config):
        super().__init__()
        from transformers import BlipTextModel, BlipVisionModel

        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        width = text_config.hidden_size
        # the released head: linear layers with dropout and no nonlinearity (dropout is off in eval)
        self.head = nn.Sequential(nn.Linear(width, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                  nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image = self.vision(pixel_values=pixels).last_hidden_state
        image_mask = torch.ones(image.shape[:-1], dtype=torch.long, device=image.device)
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image,
                         encoder_attention_mask=image_mask).last_hidden_state
        return (self.head(text[:, 0, :]).squeeze(-1).float() - REWARD_MEAN) / REWARD_STD


def convert_imagereward_state_dict(state: dict) -> dict:
    """``ImageReward.pt`` keys (BLIP's original modules) -> :class:`ImageRewardModel` keys."""
    out = {}
    for key, value in state.items():
        if key.startswith(_UNUSED):
            continue
        if key.startswith("blip.visual_encoder."):
            name = key[len("blip.visual_encoder."):]
            for pattern, replacement in _VISION_RENAMES:
                name = re.sub(pattern, replacement, name)
            out["vision." + name] = value
        elif key.startswith("blip.text_encoder."):
            out["text." + key[len("blip.text_encoder."):]] = value
        elif key.startswith("mlp.layers."):
            out["head." + key[len("mlp.layers."):]] = value
        else:
            out[key] = value  # reported as unexpected by the strict load
    return out


@REWARDS.register("imagereward")
class ImageReward(Reward):
    """ImageReward v1.0: the standardised preference score of BLIP + MLP (higher is better, about -2..2).

    Options: ``path`` (a directory with ``ImageReward.pt`` and ``med_config.json``, and the BERT
    tokenizer files or not: then they come from ``tokenizer``), ``hub_id`` (default
    ``THUDM/ImageReward``), ``tokenizer`` (hub id or directory, default ``google-bert/bert-base-uncased``),
    ``dtype`` (``float32``, ``bfloat16`` or ``float16`` weights).
    """

    name = "imagereward"
    differentiable = True
    needs_prompts = True

    def __init__(self, *, path: str | os.PathLike | None = None, hub_id: str = IMAGEREWARD_HUB_ID,
                 tokenizer: str = IMAGEREWARD_TOKENIZER, dtype: str = "float32"):
        super().__init__()
        torch_dtype = weights_dtype(self.name, dtype)
        from transformers import AutoTokenizer, BlipTextConfig, BlipVisionConfig

        checkpoint, med_config, vision_override = self._files(path, hub_id)
        med = json.loads(Path(med_config).read_text())
        vision = dict(VIT_L16)
        if vision_override is not None:
            vision.update(json.loads(Path(vision_override).read_text()))
        # BLIP sets the cross-attention width to the ViT's (med_config.json says 768; ViT-L is 1024)
        text_config = BlipTextConfig(
            vocab_size=med["vocab_size"], hidden_size=med["hidden_size"], intermediate_size=med["intermediate_size"],
            num_hidden_layers=med["num_hidden_layers"], num_attention_heads=med["num_attention_heads"],
            max_position_embeddings=med["max_position_embeddings"], encoder_hidden_size=vision["hidden_size"],
            layer_norm_eps=med.get("layer_norm_eps", 1e-12), hidden_act=med.get("hidden_act", "gelu"),
            pad_token_id=med.get("pad_token_id", 0), bos_token_id=None, sep_token_id=None, eos_token_id=None)
        model = ImageRewardModel(BlipVisionConfig(**vision), text_config)
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) and "state_dict" in state else state
        except (RuntimeError, KeyError, AttributeError, pickle.UnpicklingError, OSError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DiffalignError(f"reward 'imagereward': cannot load {checkpoint}: {first}") from None
        load_state_exactly(model, convert_imagereward_state_dict(state), self.name, checkpoint)
        self.model = model.to(torch_dtype).eval().requires_grad_(False)
        tokenizer_source = str(Path(path).expanduser()) if path is not None and (
            Path(path).expanduser() / "vocab.txt").is_file() else tokenizer
        if tokenizer_source == tokenizer and not Path(str(tokenizer)).expanduser().is_dir():
            tokenizer_source = resolve_source(self.name, None, tokenizer)
        self.tokenizer = hub_load(self.name, "tokenizer", tokenizer_source, lambda s: AutoTokenizer.from_pretrained(s))
        size = int(vision["image_size"])
        self.preprocess = PixelPreprocess(PreprocessConfig(size=size, crop=(size, size), mode="shortest",
                                                           interpolation="bicubic", mean=OPENAI_CLIP_MEAN,
                                                           std=OPENAI_CLIP_STD, crop_offset="round"), name=self.name)
        self.source = str(checkpoint)
        self._tokens = TextEmbeddingCache()  # token ids and masks per prompt (no text-only encoding exists)
        self.eval()

    def _files(self, path, hub_id: str) -> tuple[str, str, str | None]:
        if path is not None:
            directory = Path(resolve_source(self.name, path, hub_id))
            missing = [f for f in (IMAGEREWARD_FILE, "med_config.json") if not (directory / f).is_file()]
            if missing:
                raise DiffalignError(f"reward 'imagereward': {directory} has no {' or '.join(missing)} (the files of "
                                     f"the hub repo {hub_id})")
            override = directory / "vision_config.json"
            return (str(directory / IMAGEREWARD_FILE), str(directory / "med_config.json"),
                    str(override) if override.is_file() else None)
        repo = resolve_source(self.name, None, hub_id)

        def download(name: str):
            def fetch(repo_id: str) -> str:
                from huggingface_hub import hf_hub_download

                return hf_hub_download(repo_id, name)
            return fetch

        checkpoint = hub_load(self.name, f"checkpoint {IMAGEREWARD_FILE} of", repo, download(IMAGEREWARD_FILE))
        med_config = hub_load(self.name, "med_config.json of", repo, download("med_config.json"))
        try:  # optional (THUDM/ImageReward has none): a repo of another ViT size says so here
            override = download("vision_config.json")(repo)
        except Exception:  # absent online (404) or offline (not cached): the ViT-L/16 default applies
            override = None
        return checkpoint, med_config, override

    def _encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=PROMPT_TOKENS,
                                return_tensors="pt")
        return torch.stack([tokens["input_ids"], tokens["attention_mask"]], dim=1)  # (P, 2, 35)

    def forward(self, images: torch.Tensor, prompts=None, metadata=None) -> torch.Tensor:
        weight = self.model.head[0].weight
        pixels = self.preprocess(images).to(device=weight.device, dtype=weight.dtype)
        tokens = self._tokens(prompts, self._encode_prompts).to(weight.device)
        return self.model(pixels, tokens[:, 0], tokens[:, 1]).to(images.device)

    def extra_repr(self) -> str:
        return f"source={self.source!r}"
