"""Evaluating a text-to-image model on the shapes world: GenEval-style accuracy and a fidelity distance.

- :func:`verifier_accuracy`: the fraction of images the strict ``shapes-verifier`` accepts, per
  category (GenEval reports the same per-category means, Ghosh et al. 2023, arXiv:2310.11513);
- :func:`fidelity`: the Frechet distance (Heusel et al. 2017, the FID formula) between shapes-clip image
  embeddings of the generated images and of fresh ground-truth renders *of the same prompts*. It is the
  FID recipe with shapes-clip in place of Inception (Inception knows nothing of 32x32 shape scenes).
  Two independent render sets give its floor (:func:`fidelity_floor`), the distance sampling noise
  alone produces at that sample size.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .captions import CATEGORIES, parse_caption

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "data" / "shapes" / "prompts"


def load_prompts(split: str = "test") -> list[dict]:
    """The shipped prompt rows (``prompt``, ``category``, ``held_out``, ...) of ``split`` (train or test)."""
    if split not in ("train", "test"):
        from ..errors import DiffalignError

        raise DiffalignError(f"unknown shapes prompt split {split!r}; valid choices: train, test")
    return [json.loads(line) for line in (PROMPTS_DIR / f"{split}.jsonl").read_text().splitlines() if line.strip()]


def per_category(rows: Sequence[dict], count: int, spread: bool = False) -> list[dict]:
    """``count`` rows of each category, category by category: the first ones, or (``spread``) evenly
    spaced through the category's rows (a category with fewer rows gives all of them)."""
    chosen = []
    for category in CATEGORIES:
        own = [r for r in rows if r["category"] == category]
        if spread and len(own) > count:
            own = [own[i * len(own) // count] for i in range(count)]
        chosen += own[:count]
    return chosen


def verifier_accuracy(images: torch.Tensor, prompts: Sequence[str], partial: bool = False) -> dict[str, float]:
    """Mean verifier score per category, plus ``overall`` (the mean of the category means, as GenEval)."""
    from .verifier import ShapesVerifier

    scores = ShapesVerifier(partial=partial)(images, prompts=list(prompts)).tolist()
    by_category: dict[str, list[float]] = defaultdict(list)
    for prompt, score in zip(prompts, scores):
        by_category[parse_caption(prompt).category].append(score)
    table = {c: float(np.mean(by_category[c])) for c in CATEGORIES if by_category[c]}
    table["overall"] = float(np.mean(list(table.values())))
    return table


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets (rows are samples)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    root = root.real  # numerical noise can leave tiny imaginary parts
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def clip_features(images: torch.Tensor, backbone=None) -> np.ndarray:
    """shapes-clip image embeddings (L2-normalised, 64-d) of float [0, 1] NCHW images."""
    from .clip import load_shapes_clip

    backbone = backbone or load_shapes_clip()
    with torch.no_grad():
        return torch.cat([backbone.encode_image(chunk) for chunk in images.split(256)]).double().numpy()


def renders(prompts: Sequence[str], seed: int) -> torch.Tensor:
    """Ground-truth renders of the prompts (one scene each) as float [0, 1] NCHW."""
    from .scenes import render_batch, sample_scenes, to_tensor

    return to_tensor(render_batch(sample_scenes(list(prompts), seed=seed)))


def fidelity(images: torch.Tensor, prompts: Sequence[str], seed: int = 1000, backbone=None) -> float:
    """Frechet distance in shapes-clip space between ``images`` and renders of the same prompts (lower is better)."""
    return frechet_distance(clip_features(images, backbone), clip_features(renders(prompts, seed), backbone))


def fidelity_floor(prompts: Sequence[str], seed: int = 2000, backbone=None) -> float:
    """The same distance between two independent render sets of ``prompts``: what noise alone gives."""
    return frechet_distance(clip_features(renders(prompts, seed), backbone),
                            clip_features(renders(prompts, seed + 1), backbone))


def sample_images(model, prompts: Sequence[str], steps: int = 20, guidance: float = 3.0, seed: int = 0,
                  batch: Optional[int] = 128) -> torch.Tensor:
    """Generate one image per prompt with ``da.sample`` (ancestral, CFG ``guidance``) and decode to [0, 1]."""
    from ..api import sample
    from ..models.wrappers import CFGDenoiser

    guided = CFGDenoiser(model, guidance) if guidance != 1.0 else model
    chunks = []
    prompts = list(prompts)
    step = batch or len(prompts)
    for start in range(0, len(prompts), step):
        part = prompts[start:start + step]
        out = sample(guided, None, sampler="ancestral", num_samples=len(part), steps=steps, seed=seed + start,
                        cond=part)
        with torch.no_grad():
            chunks.append(model.decode(out.samples).clamp(0, 1).float().cpu())
    return torch.cat(chunks)
