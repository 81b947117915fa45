"""``shapes-clip``: a tiny CLIP (transformers ``CLIPModel``) trained contrastively on the shapes world.

CLIP: Radford et al. 2021, arXiv:2103.00020. The model is the stock transformers ``CLIPModel`` (a ViT
image tower on 4x4 patches of 32x32 images, a text transformer over the world's BPE tokenizer), stored
as ``config.json`` + ``model.safetensors`` + tokenizer files in ``diffalign/data/shapes-clip``, so
``CLIPModel.from_pretrained`` and ``CLIPTokenizer.from_pretrained`` load it with no custom code. It
is trained by ``scripts/train_shapes_clip.py`` on every composition of the world (it is a reward
model, like GenEval's detector, not the policy), with NegCLIP-style hard negatives (Yuksekgonul et al.
2023, arXiv:2210.01936): perturbed captions (swapped colour, wrong count, opposite position).

:class:`ShapesClipBackbone` mirrors :class:`diffalign.rewards.clip_backbone.ClipBackbone`:
``encode_image(images)`` takes float [0, 1] NCHW images (differentiable torch preprocessing:
resize to 32x32 if needed, normalise) and ``encode_text(texts)`` takes strings; both return
L2-normalised embeddings, so ``100 * cos`` is a CLIPScore (Hessel et al. 2021, arXiv:2104.08718).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DiffalignError

DIRECTORY = Path(__file__).resolve().parent.parent / "data" / "shapes-clip"
IMAGE_SIZE = 32
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def clip_config(vocab_size: int, bos: int, eos: int, pad: int, max_length: int):
    """The shapes-clip architecture: about 0.5M parameters, a 64-wide joint embedding."""
    from transformers import CLIPConfig

    text = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=max_length, bos_token_id=bos, eos_token_id=eos,
                pad_token_id=pad)
    vision = dict(image_size=IMAGE_SIZE, patch_size=4, num_channels=3, hidden_size=96, intermediate_size=192,
                  num_hidden_layers=3, num_attention_heads=4)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


class ShapesClipBackbone(nn.Module):
    """A frozen shapes-clip with the interface of :class:`~diffalign.rewards.clip_backbone.ClipBackbone`."""

    model_name = "shapes-clip"

    def __init__(self, model: nn.Module, tokenizer, frozen: bool = True):
        super().__init__()
        self.model = model.eval().requires_grad_(False) if frozen else model
        self.tokenizer = tokenizer
        self.image_size = (IMAGE_SIZE, IMAGE_SIZE)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Float [0, 1] (B, 1|3, H, W) -> normalised (B, 3, 32, 32), differentiably."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise DiffalignError(f"shapes-clip expects (B, 1|3, H, W) images in [0, 1]; got shape {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        images = images.to(device=self.mean.device, dtype=self.mean.dtype)
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        return (images - self.mean) / self.std

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (B, D) of float [0, 1] images, differentiable."""
        # the towers and projections directly: get_*_features changed return type across transformers versions
        pooled = self.model.vision_model(pixel_values=self.preprocess(images)).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    def tokens(self, texts: list[str]) -> dict:
        encoded = self.tokenizer(list(texts), padding="max_length", truncation=True, return_tensors="pt")
        return {k: v.to(self.mean.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings (T, D)."""
        if isinstance(texts, str):
            texts = [texts]
        pooled = self.model.text_model(**self.tokens(texts)).pooler_output
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)

    def score(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """CLIPScore ``max(100 cos, 0)`` of each image against its own text."""
        return (100.0 * (self.encode_image(images) * self.encode_text(texts)).sum(-1)).clamp(min=0.0)


def shape_centroids(scenes) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each shape is in each scene: the target of the training-only auxiliary position objective.

    Returns ``(centres, present)``: ``centres`` (N, len(SHAPES), 2) is the mean (x, y) centre of the
    scene's objects of each shape, scaled to [-1, 1] (absent shapes hold 0), and ``present`` (N, len(SHAPES))
    marks the shapes the scene has. Position captions name two different shapes, so these centres decide
    every relation the world can caption.
    """
    from .captions import SHAPES
    from .scenes import SIZE

    centres = torch.zeros(len(scenes), len(SHAPES), 2)
    counts = torch.zeros(len(scenes), len(SHAPES))
    for row, scene in enumerate(scenes):
        for obj in scene.objects:
            column = SHAPES.index(obj.shape)
            centres[row, column] += torch.tensor([obj.cx, obj.cy], dtype=torch.float32)
            counts[row, column] += 1
    present = counts > 0
    centres = centres / counts.clamp(min=1).unsqueeze(-1)
    centres = torch.where(present.unsqueeze(-1), centres / (SIZE - 1) * 2 - 1, torch.zeros_like(centres))
    return centres, present


def load_shapes_clip(directory: str | Path | None = None) -> ShapesClipBackbone:
    """The embedded shapes-clip (or one saved by ``scripts/train_shapes_clip.py --out DIR``), frozen."""
    directory = Path(directory) if directory is not None else DIRECTORY
    if not (directory / "config.json").exists():
        raise DiffalignError(f"shapes-clip weights are missing from {directory}; run scripts/train_shapes_clip.py "
                             f"or reinstall diffalign")
    return _load(str(directory.resolve()))


@functools.lru_cache(maxsize=2)
def _load(directory: str) -> ShapesClipBackbone:
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(directory)
    return ShapesClipBackbone(model, CLIPTokenizer.from_pretrained(directory))


def zero_shot_accuracy(backbone: ShapesClipBackbone, captions=None, seed: int = 777) -> dict[tuple[str, str], tuple[int, int]]:
    """How often the true caption of a fresh render outscores a perturbed one, per (category, perturbation).

    For each caption (default: the test prompts) one scene is rendered; every perturbation of each kind
    in :data:`~.captions.PERTURBATIONS` that is false for that scene is scored against the true caption.
    Returns ``{(category, kind): (correct, total)}``.
    """
    from .captions import PERTURBATIONS, perturbations, evaluation_captions
    from .scenes import render_batch, sample_scenes, to_tensor
    from .verifier import caption_clauses

    captions = evaluation_captions() if captions is None else captions
    scenes = sample_scenes(captions, seed)
    with torch.no_grad():
        images = backbone.encode_image(to_tensor(render_batch(scenes)))
        cache: dict[str, torch.Tensor] = {}

        def text(caption) -> torch.Tensor:
            key = caption.text()
            if key not in cache:
                cache[key] = backbone.encode_text([key])[0]
            return cache[key]

        tally: dict[tuple[str, str], list[int]] = {}
        for image, caption, scene in zip(images, captions, scenes):
            true_score = float(image @ text(caption))
            for kind in PERTURBATIONS[caption.category]:
                for wrong in perturbations(caption, kind):
                    if all(caption_clauses(wrong, scene.objects)):
                        continue  # still true for this scene (e.g. a colour the caption left open)
                    counts = tally.setdefault((caption.category, kind), [0, 0])
                    counts[0] += int(true_score > float(image @ text(wrong)))
                    counts[1] += 1
    return {key: (c, t) for key, (c, t) in tally.items()}
