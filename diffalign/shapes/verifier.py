"""``shapes-verifier``: a GenEval-style programmatic reward for the shapes world.

GenEval (Ghosh et al., "GenEval: An Object-Focused Framework for Evaluating Text-to-Image Alignment",
NeurIPS 2023, arXiv:2310.11513) parses each prompt into required objects, detects objects in the image,
and checks counts, colours and relative positions; an image scores 1 only when every check holds. Here
the detector is exact geometry instead of a neural network:

1. **colour segmentation**: a pixel is foreground when its saturation (max - min channel) exceeds
   :data:`SATURATION_THRESHOLD`; it takes the nearest palette colour;
2. **connected components** (8-connected) per colour, dropping specks smaller than :data:`MIN_AREA`;
3. **touching same-colour objects** merge into one component. A component that is not one shape
   (its deviation, log aspect ratio plus one minus the best template IoU, is large) is cut along a row
   or column: into two shape-like sides when one cut does it, else one exact shape is peeled off a
   cluster at a time; a blob no cut explains is eroded until it falls apart and each pixel goes to
   the nearest surviving core (diagonal contacts on generated images);
4. **shape** is the template (filled square, disc, apex-up triangle, stretched to the object's
   bounding box) with the highest IoU, which also separates small circles from triangles; a blob
   that fits no template (IoU under :data:`MIN_SHAPE_IOU`) is no shape at all, so that noise or smears
   cannot satisfy a caption (a reward that training optimises must not be that easy to hack);
5. **clauses** (see :mod:`.captions`): "a X" needs at least one X; a number word needs exactly that
   many; "a red X" needs an X and a red one; "A left of B" needs an A whose centroid lies at least
   :data:`POSITION_MARGIN` pixels left of some B's (GenEval also compares centres along one axis only).

The score is 1/0 per image (strict, GenEval's), or with ``partial=True`` the fraction of the caption's
clauses that hold: a denser signal for training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from ..errors import DiffalignError
from ..rewards.base import Reward
from ..rewards.registry import REWARDS
from .captions import COLOURS, Caption, parse_caption
from .scenes import PALETTE

SATURATION_THRESHOLD = 70 / 255
MIN_AREA = 24  # about half the smallest shape (a radius-4 triangle, 41 px): specks are not objects
#: a component within this deviation (log aspect + 1 - best template IoU) of one shape is not split
SINGLE_SHAPE_DEVIATION = 0.15
#: a detected blob must match its best shape template at least this well (IoU) to count as that shape
MIN_SHAPE_IOU = 0.7
MAX_ASPECT = 1.6
UNRECOGNISED = "unrecognised"
#: below this a component is one exactly drawn shape
EXACT_SHAPE_DEVIATION = 0.04
POSITION_MARGIN = 3.0

_PALETTE = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32) / 255.0


@dataclass(frozen=True)
class DetectedObject:
    """One object: its shape, colour name, centroid (x right, y down, pixels) and area in pixels."""

    shape: str
    colour: str
    cx: float
    cy: float
    area: int = 0


# --------------------------------------------------------------------------------------------- clauses


def caption_clauses(caption: Caption | str, objects: Iterable) -> list[bool]:
    """Each clause of ``caption`` checked against ``objects`` (anything with shape, colour, cx, cy)."""
    if isinstance(caption, str):
        caption = parse_caption(caption)
    objects = list(objects)
    clauses = []
    for group in caption.groups:
        of_shape = [o for o in objects if o.shape == group.shape]
        coloured = [o for o in of_shape if o.colour == group.colour]
        if group.exact:
            clauses.append(len(of_shape) == group.count)
            if group.colour:
                clauses.append(len(coloured) == group.count)
        else:
            clauses.append(len(of_shape) >= 1)
            if group.colour:
                clauses.append(len(coloured) >= 1)
    if caption.relation is not None:
        first = [o for o in objects if o.shape == caption.groups[0].shape]
        second = [o for o in objects if o.shape == caption.groups[1].shape]
        clauses.append(any(relation_holds(caption.relation, a, b) for a in first for b in second))
    return clauses


def relation_holds(relation: str, a, b) -> bool:
    """Whether ``a`` is ``relation`` ``b`` (centroids; y grows downwards)."""
    if relation == "left of":
        return b.cx - a.cx >= POSITION_MARGIN
    if relation == "right of":
        return a.cx - b.cx >= POSITION_MARGIN
    if relation == "above":
        return b.cy - a.cy >= POSITION_MARGIN
    if relation == "below":
        return a.cy - b.cy >= POSITION_MARGIN
    raise DiffalignError(f"unknown relation {relation!r}; valid choices: left of, right of, above, below")


# ------------------------------------------------------------------------------------------- detection


def detect_objects(image: np.ndarray | torch.Tensor) -> list[DetectedObject]:
    """Objects in one image: float [0, 1] CHW tensor/array, or uint8 HWC array."""
    from scipy import ndimage

    pixels = _hwc_float(image)
    saturation = pixels.max(axis=-1) - pixels.min(axis=-1)
    distances = ((pixels[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1)
    nearest = distances.argmin(-1)
    foreground = saturation > SATURATION_THRESHOLD
    found = []
    eight = np.ones((3, 3), dtype=bool)
    for index, colour in enumerate(COLOURS):
        labels, count = ndimage.label(foreground & (nearest == index), structure=eight)
        for label in range(1, count + 1):
            mask = labels == label
            if mask.sum() < MIN_AREA:
                continue
            for part in _split_touching(mask):
                found.append(_describe(part, colour))
    return found


def _hwc_float(image) -> np.ndarray:
    if torch.is_tensor(image):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def _box(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def _template_ious(mask: np.ndarray) -> dict[str, float]:
    """IoU of a mask's bounding-box crop with an ideal square, disc and apex-up triangle of that box."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    height, width = crop.shape
    v, u = np.mgrid[0:height, 0:width]
    u = (u + 0.5) / width
    v = (v + 0.5) / height
    templates = {"square": np.ones_like(crop), "circle": (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25 + 0.5 / (height * width),
                 "triangle": np.abs(u - 0.5) <= v / 2 + 1e-6}
    return {name: float((crop & t).sum() / (crop | t).sum()) for name, t in templates.items()}


def _deviation(mask: np.ndarray) -> float:
    """How far a mask is from one shape: log aspect ratio of its box plus one minus its best template IoU."""
    height, width = _box(mask)
    return abs(float(np.log(height / width))) + 1.0 - max(_template_ious(mask).values())


def _looks_single(mask: np.ndarray) -> bool:
    return _deviation(mask) < SINGLE_SHAPE_DEVIATION


def _split_touching(mask: np.ndarray, depth: int = 0) -> list[np.ndarray]:
    """One mask per object in a same-colour component (touching objects merge into one).

    First an axis-aligned cut (objects whose boxes do not overlap are always separable by one): the
    cut that leaves the two sides most shape-like, kept only when it beats the whole. Otherwise erode
    until the blob falls apart and give every pixel to the nearest surviving core (diagonal contacts).
    """
    if depth >= 4 or _deviation(mask) < EXACT_SHAPE_DEVIATION:
        return [mask]
    cuts = _cuts(mask)
    whole = _deviation(mask)
    pairs = [(dev_a + dev_b, a, b) for a, b, dev_a, dev_b in cuts if dev_a + dev_b < whole - 0.1]
    if pairs:  # two shape-like sides
        _, first, second = min(pairs, key=lambda item: item[0])
        return _split_touching(first, depth + 1) + _split_touching(second, depth + 1)
    # peel one exact shape off a cluster (three or four touching same-colour objects), largest first
    peels = [(int(a.sum()), a, b) for a, b, dev_a, _ in cuts if dev_a < EXACT_SHAPE_DEVIATION]
    peels += [(int(b.sum()), b, a) for a, b, _, dev_b in cuts if dev_b < EXACT_SHAPE_DEVIATION]
    if peels:
        _, exact, rest = max(peels, key=lambda item: item[0])
        return [exact] + _split_touching(rest, depth + 1)
    if _looks_single(mask):
        return [mask]
    return _erode_split(mask)


def _cuts(mask: np.ndarray) -> list:
    """Every vertical and horizontal cut of a mask into two sides of at least MIN_AREA pixels, with deviations."""
    ys, xs = np.nonzero(mask)
    cuts = []
    for axis, coords in ((1, xs), (0, ys)):
        for k in range(int(coords.min()) + 1, int(coords.max()) + 1):
            first, second = mask.copy(), mask.copy()
            if axis == 1:
                first[:, k:] = False
                second[:, :k] = False
            else:
                first[k:] = False
                second[:k] = False
            if first.sum() >= MIN_AREA and second.sum() >= MIN_AREA:
                cuts.append((first, second, _deviation(first), _deviation(second)))
    return cuts


def _erode_split(mask: np.ndarray) -> list[np.ndarray]:
    from scipy import ndimage

    eight = np.ones((3, 3), dtype=bool)
    eroded = mask
    for _ in range(3):
        eroded = ndimage.binary_erosion(eroded, structure=eight)
        labels, count = ndimage.label(eroded, structure=eight)
        sizes = ndimage.sum(eroded, labels, range(1, count + 1))
        if (sizes >= 2).sum() >= 2:
            keep = np.isin(labels, 1 + np.nonzero(sizes >= 2)[0])
            _, (iy, ix) = ndimage.distance_transform_edt(~keep, return_indices=True)
            owner = labels[iy, ix]
            parts = [mask & (owner == label) for label in np.unique(owner[mask])]
            return [part for part in parts if part.sum() >= MIN_AREA]
        if not eroded.any():
            break
    return [mask]


def _describe(mask: np.ndarray, colour: str) -> DetectedObject:
    """Shape = the template (square, disc, apex-up triangle) its bounding-box crop matches best.

    A blob that matches no template well (best IoU under MIN_SHAPE_IOU, or a box longer than
    MAX_ASPECT to one) is :data:`UNRECOGNISED`: it counts as no shape, so noise cannot pass a caption.
    """
    ys, xs = np.nonzero(mask)
    ious = _template_ious(mask)
    shape = max(ious, key=ious.get)
    height, width = _box(mask)
    if ious[shape] < MIN_SHAPE_IOU or max(height, width) > MAX_ASPECT * min(height, width):
        shape = UNRECOGNISED
    return DetectedObject(shape, colour, float(xs.mean()), float(ys.mean()), int(mask.sum()))


# ---------------------------------------------------------------------------------------------- reward


def verify(image, caption: Caption | str, partial: bool = False) -> float:
    """1.0 when every clause of ``caption`` holds in ``image`` (else 0.0); ``partial``: the fraction that hold."""
    clauses = caption_clauses(caption, detect_objects(image))
    if partial:
        return sum(clauses) / len(clauses)
    return float(all(clauses))


@REWARDS.register("shapes-verifier")
class ShapesVerifier(Reward):
    """GenEval-style verifier of the shapes world: 1/0 per image, or clause fractions with ``partial=True``.

    Needs each image's prompt (a caption of :mod:`diffalign.shapes.captions`); a prompt outside the
    grammar raises one line naming it. Not differentiable (GenEval's score is not either).
    """

    name = "shapes-verifier"
    differentiable = False
    needs_prompts = True

    def __init__(self, *, partial: bool = False):
        super().__init__()
        if not isinstance(partial, bool):
            raise DiffalignError(f"shapes-verifier option partial must be True or False; got {partial!r}")
        self.partial = partial
        self._parsed: dict[str, Caption] = {}

    def _caption(self, prompt: str) -> Caption:
        if prompt not in self._parsed:
            self._parsed[prompt] = parse_caption(prompt)
        return self._parsed[prompt]

    def forward(self, images: torch.Tensor, prompts: Optional[Sequence[str]] = None, metadata=None) -> torch.Tensor:
        captions = [self._caption(p) for p in prompts]
        pixels = images.detach().float().clamp(0, 1).cpu().numpy()
        scores = [verify(pixels[i], captions[i], self.partial) for i in range(len(captions))]
        return torch.tensor(scores, dtype=torch.float32, device=images.device)

    def extra_repr(self) -> str:
        return f"partial={self.partial}"
