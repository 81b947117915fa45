"""A frozen open_clip model with differentiable, in-torch preprocessing (shared by clip and aesthetic).

CLIP: Radford et al., "Learning Transferable Visual Models From Natural Language Supervision"
(ICML 2021, arXiv:2103.00020); models and weights through open_clip (Ilharco et al.,
https://github.com/mlfoundations/open_clip).

open_clip's own preprocessing works on PIL images, which would cut the gradient. Here images
stay tensors: float [0, 1] NCHW (one channel is repeated to three) are resized with
bilinear, antialiased interpolation so the shorter side matches the model's input size,
center-cropped (for square inputs this is a plain resize to the model's size), and normalised
with the checkpoint's mean/std. Every step is differentiable.

Weights come from ``pretrained``: a local checkpoint file (used as is, nothing is downloaded),
or an open_clip tag such as ``"openai"`` (fetched by open_clip from the Hugging Face hub, so
only usable online or when already in the local cache). Offline with nothing cached, loading
raises a :class:`~diffalign.errors.DiffalignError` that says which file to download and how to
pass it. ``open_clip`` is imported lazily, when a backbone is first built.
"""

from __future__ import annotations

import difflib
import functools
import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DiffalignError

__all__ = ["ClipBackbone", "DEFAULT_MODEL", "DEFAULT_PRETRAINED", "import_open_clip", "load_clip_backbone"]

DEFAULT_MODEL = "ViT-L-14"
DEFAULT_PRETRAINED = "openai"
CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt")


def import_open_clip():
    try:
        import open_clip
    except ImportError as err:
        raise DiffalignError(f"CLIP-based rewards need open-clip-torch (pip install open-clip-torch): {err}") from None
    return open_clip


class ClipBackbone(nn.Module):
    """A frozen open_clip model plus the tensor preprocessing its image tower expects."""

    def __init__(self, model: nn.Module, tokenizer, image_size, mean, std, model_name: str = ""):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.model_name = model_name
        size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (int(image_size), int(image_size))
        self.image_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @property
    def embed_dim(self) -> int | None:
        """Width of the joint image/text embedding, when the image tower reports it."""
        return getattr(self.model.visual, "output_dim", None)

    def train(self, mode: bool = True) -> "ClipBackbone":
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Float [0, 1] (B, 1|3, H, W) -> normalised (B, 3, S, S) model input, differentiably."""
        channels = images.shape[1]
        if channels == 1:
            images = images.repeat(1, 3, 1, 1)
        elif channels != 3:
            raise DiffalignError(f"CLIP rewards expect images with 1 or 3 channels; got shape {tuple(images.shape)}")
        images = images.to(device=self.mean.device, dtype=self.mean.dtype)
        height, width = images.shape[-2:]
        out_h, out_w = self.image_size
        if (height, width) != (out_h, out_w):
            scale = max(out_h / height, out_w / width)
            new_h, new_w = max(out_h, round(height * scale)), max(out_w, round(width * scale))
            images = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
            top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
            images = images[..., top:top + out_h, left:left + out_w]
        return (images - self.mean) / self.std

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (B, D) of float [0, 1] images, differentiable."""
        return F.normalize(self.model.encode_image(self.preprocess(images)).float(), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings (T, D)."""
        tokens = self.tokenizer(list(texts)).to(self.mean.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def load_clip_backbone(
    model_name: str = DEFAULT_MODEL,
    pretrained: str | os.PathLike | None = DEFAULT_PRETRAINED,
    quick_gelu: bool | None = None,
) -> ClipBackbone:
    """Build (or reuse) the frozen backbone for ``model_name`` with weights ``pretrained``.

    ``pretrained`` is a checkpoint file or an open_clip tag; ``quick_gelu=None`` takes the
    activation from the tag (the OpenAI weights need QuickGELU) or, for a file, from the model
    config (use a ``*-quickgelu`` model name or ``quick_gelu=True`` for OpenAI weights in a file).
    Backbones are cached per (model, weights, quick_gelu), so a CLIP score and an aesthetic score
    on the same CLIP share one copy; the shared module moves devices for all its users.
    """
    if not isinstance(model_name, str) or not model_name:
        raise DiffalignError(f"model_name must be an open_clip model name such as {DEFAULT_MODEL!r}; got {model_name!r}")
    if pretrained is None or (isinstance(pretrained, str) and not pretrained):
        raise DiffalignError(
            f"CLIP model {model_name} needs weights: pass pretrained=/path/to/checkpoint or an open_clip tag "
            f"such as {DEFAULT_PRETRAINED!r}"
        )
    if not isinstance(pretrained, (str, os.PathLike)):
        raise DiffalignError(f"pretrained must be a checkpoint path or an open_clip tag; got {pretrained!r}")
    if quick_gelu is not None and not isinstance(quick_gelu, bool):
        raise DiffalignError(f"quick_gelu must be True, False or None; got {quick_gelu!r}")
    path = Path(pretrained).expanduser()
    key = str(path.resolve()) if path.is_file() else str(pretrained)
    return _load_backbone(model_name, key, quick_gelu)


@functools.lru_cache(maxsize=4)
def _load_backbone(model_name: str, pretrained: str, quick_gelu: bool | None) -> ClipBackbone:
    open_clip = import_open_clip()
    known = open_clip.list_models()
    if model_name not in known:
        close = difflib.get_close_matches(model_name, known, n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DiffalignError(f"unknown open_clip model {model_name!r}{hint} (open_clip.list_models() lists all)")

    if Path(pretrained).is_file():
        checkpoint, tag_cfg = pretrained, {}
    else:
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        if not tag_cfg:
            if Path(pretrained).suffix in CHECKPOINT_SUFFIXES or os.sep in pretrained:
                raise DiffalignError(f"CLIP checkpoint file {pretrained} does not exist")
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "(none)"
            raise DiffalignError(
                f"pretrained {pretrained!r} is neither an existing file nor an open_clip tag for {model_name}; "
                f"known tags: {tags}"
            )
        try:
            checkpoint = open_clip.pretrained.download_pretrained(tag_cfg)
        except Exception as err:  # network, offline mode, missing cache: all mean "get the file yourself"
            raise DiffalignError(_download_hint(model_name, pretrained, tag_cfg, err)) from None
    if quick_gelu is None:
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))

    try:
        model = open_clip.create_model(model_name, pretrained=checkpoint, force_quick_gelu=quick_gelu)
    except (RuntimeError, ValueError, KeyError, OSError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DiffalignError(f"could not load {checkpoint} into open_clip model {model_name}: {first}") from None
    preprocess = open_clip.get_model_preprocess_cfg(model)
    mean = tag_cfg.get("mean", preprocess["mean"])
    std = tag_cfg.get("std", preprocess["std"])
    tokenizer = open_clip.get_tokenizer(model_name)
    return ClipBackbone(model, tokenizer, model.visual.image_size, mean, std, model_name=model_name)


def _download_hint(model_name: str, tag: str, tag_cfg: dict, err: Exception) -> str:
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)  # "org/repo/" -> default file name, "org/repo/file" -> file
        filename = filename or "open_clip_pytorch_model.bin"
        source = f"https://huggingface.co/{repo}/resolve/main/{filename}"
    else:
        source = tag_cfg.get("url", "the open_clip release page")
        filename = source.rsplit("/", 1)[-1] or "checkpoint.pt"
    needs_quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    flag = ", quick_gelu=True" if needs_quick_gelu else ""
    offline = ""
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            offline = " (offline mode: HF_HUB_OFFLINE is set)"
    except ImportError:
        pass
    reason = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__
    return (
        f"cannot get the open_clip weights for {model_name} (tag {tag}){offline}: {reason}. "
        f"Download the open_clip checkpoint for {model_name} (tag {tag}) from {source}, save it anywhere "
        f"(e.g. ~/models/{model_name}-{tag}/{filename}) and pass pretrained=/path/to/{filename}{flag}; "
        f"or run once with network access so it lands in the Hugging Face cache"
    )
