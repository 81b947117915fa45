"""Seeded, pure, fast rendering of the shapes world: coloured circles, squares and triangles on a plain background.

A :class:`Scene` lists its objects (shape, colour name, exact RGB, radius, centre) and the background;
:func:`render` turns it into a ``(32, 32, 3)`` uint8 array with no randomness, and
:func:`sample_scene` draws a scene that makes a :class:`~.captions.Caption` true, from a numpy
``Generator``. Everything is numpy on a 32x32 grid, so tens of thousands of scenes render per
second on one core: training data costs nothing next to training.

Geometry (why these choices): shapes are told apart by how much of their bounding box they fill
(square 1.0, circle about 0.8, triangle about 0.55). A circle drawn as ``d^2 <= r^2`` fills only
about 0.6 of its box at r = 4 on the pixel lattice, too close to a triangle; ``d^2 <= (r + 1/2)^2``
keeps it near 0.8 at every radius. Objects never overlap: their bounding boxes are at least
``min_gap`` pixels apart (2 in training data; 0 in the hard cases, where objects may touch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import DiffalignError
from .captions import COLOURS, HELD_OUT_PAIRS, SHAPES, Caption, parse_caption

SIZE = 32
#: palette centres (RGB); objects jitter around them, and the verifier snaps back to the nearest one
PALETTE = {"red": (220, 45, 45), "green": (45, 190, 60), "blue": (50, 90, 230), "yellow": (225, 205, 40)}
BACKGROUND = (40, 40, 44)
COLOUR_JITTER = 18
#: object radii (half the bounding-box side, minus one half) by the number of objects in the scene
RADII = {1: (4, 5, 6, 7), 2: (4, 5, 6), 3: (4, 5), 4: (4, 5)}
MIN_RADIUS = 4
#: position captions: the named axis separates the centres by at least this much, and the other axis
#: differs by at most POSITION_SLACK, so "left of" is unmistakable in training images
POSITION_SLACK = 4


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    radius: int
    cx: int
    cy: int
    rgb: tuple[int, int, int]

    def box(self) -> tuple[int, int, int, int]:
        """Inclusive bounding box (x0, y0, x1, y1); every shape of radius r fits in 2r + 1 pixels."""
        return self.cx - self.radius, self.cy - self.radius, self.cx + self.radius, self.cy + self.radius


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int] = BACKGROUND


_YY, _XX = np.mgrid[0:SIZE, 0:SIZE]


def shape_mask(shape: str, radius: int, cx: int, cy: int) -> np.ndarray:
    """Boolean (32, 32) mask of one shape centred at (cx, cy)."""
    dx, dy = _XX - cx, _YY - cy
    if shape == "circle":
        return dx * dx + dy * dy <= (radius + 0.5) ** 2
    if shape == "square":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    if shape == "triangle":
        # apex up; the half-width grows linearly from the apex row to radius at the base row
        rows = dy + radius  # 0 at the apex row, 2r at the base row
        return (rows >= 0) & (rows <= 2 * radius) & (np.abs(dx) <= (rows + 0.5) * (radius + 0.5) / (2 * radius + 1))
    raise DiffalignError(f"unknown shape {shape!r}; valid choices: {', '.join(SHAPES)}")


def render(scene: Scene) -> np.ndarray:
    """A (32, 32, 3) uint8 image of the scene (pure: the scene holds every colour and position)."""
    image = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    image[:] = scene.background
    for obj in scene.objects:
        image[shape_mask(obj.shape, obj.radius, obj.cx, obj.cy)] = obj.rgb
    return image


def _jittered(colour: str, rng: np.random.Generator) -> tuple[int, int, int]:
    base = np.array(PALETTE[colour])
    return tuple(int(v) for v in np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3), 0, 255))


def _free_colour(shape: str, rng: np.random.Generator, exclude_held_out: bool) -> str:
    choices = [c for c in COLOURS if not (exclude_held_out and (c, shape) in HELD_OUT_PAIRS)]
    return choices[int(rng.integers(len(choices)))]


def _apart(a: tuple, b: tuple, gap: int) -> bool:
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    return ax1 + gap < bx0 or bx1 + gap < ax0 or ay1 + gap < by0 or by1 + gap < ay0


def _relation_holds(relation: str, a: SceneObject, b: SceneObject) -> bool:
    dx, dy = b.cx - a.cx, b.cy - a.cy
    need = a.radius + b.radius + 1
    if relation in ("left of", "right of"):
        return abs(dy) <= POSITION_SLACK and (dx if relation == "left of" else -dx) >= need
    return abs(dx) <= POSITION_SLACK and (dy if relation == "above" else -dy) >= need


def sample_scene(caption: Caption | str, rng: np.random.Generator, *, min_gap: int = 2,
                 exclude_held_out: bool = False, radius: Optional[int] = None, border: bool = False,
                 max_tries: int = 500) -> Scene:
    """Draw a scene that makes ``caption`` true.

    "a X" draws exactly one X (the grammar's "at least one" is then also true). Objects whose colour
    the caption leaves open get a random colour; ``exclude_held_out`` avoids the held-out colour-shape
    pairs for them (training data). ``radius`` fixes every object's radius (e.g. the smallest, for
    hard cases); ``min_gap`` is the least number of empty pixels between bounding boxes (0: may touch);
    ``border`` puts the first object against a random image edge (hard cases).
    """
    if isinstance(caption, str):
        caption = parse_caption(caption)
    wanted = [(g.shape, g.colour) for g in caption.groups for _ in range(g.count)]
    radii = RADII[len(wanted)]
    background = tuple(int(v) for v in np.clip(np.array(BACKGROUND) + rng.integers(-6, 7, 3), 0, 255))
    for _ in range(max_tries):
        objects: list[SceneObject] = []
        for shape, colour in wanted:  # place one object at a time: 4 objects rarely fit when drawn all at once
            r = radius if radius is not None else int(radii[int(rng.integers(len(radii)))])
            colour = colour or _free_colour(shape, rng, exclude_held_out)
            rgb = _jittered(colour, rng)
            for _ in range(20):
                cx, cy = (int(v) for v in rng.integers(r, SIZE - r, 2))
                if border and not objects:
                    edge = int(rng.integers(4))
                    cx = (r, SIZE - 1 - r, cx, cx)[edge]
                    cy = (cy, cy, r, SIZE - 1 - r)[edge]
                candidate = SceneObject(shape, colour, r, cx, cy, rgb)
                if not all(_apart(candidate.box(), other.box(), min_gap) for other in objects):
                    continue
                if caption.relation and objects and not _relation_holds(caption.relation, objects[0], candidate):
                    continue
                objects.append(candidate)
                break
            else:
                break
        if len(objects) == len(wanted):
            return Scene(tuple(objects), background)
    raise DiffalignError(f"could not place the objects of {caption.text()!r} in {max_tries} tries (min_gap={min_gap})")


def sample_scenes(captions: Sequence[Caption | str], seed: int, **options) -> list[Scene]:
    """One scene per caption, from one seeded generator (same seed, same scenes)."""
    rng = np.random.default_rng(seed)
    return [sample_scene(c, rng, **options) for c in captions]


def render_batch(scenes: Sequence[Scene]) -> np.ndarray:
    """(N, 32, 32, 3) uint8 images of the scenes."""
    return np.stack([render(s) for s in scenes]) if scenes else np.zeros((0, SIZE, SIZE, 3), np.uint8)


def to_tensor(images: np.ndarray):
    """uint8 (N, H, W, 3) -> float [0, 1] NCHW torch tensor (the reward convention)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)


def training_batch(rng: np.random.Generator, size: int,
                   category_weights: Optional[dict[str, float]] = None) -> tuple[list[str], np.ndarray]:
    """``size`` training captions and their renders: a category (uniform, or by ``category_weights``,
    a weight per category name, 1 for those not named), then a caption uniform within it.

    Only training captions (no held-out composition) are drawn, and colours a caption leaves open avoid
    the held-out pairs, so no training image shows a held-out composition either.
    """
    from .captions import CATEGORIES, all_captions

    pools = _training_pools(CATEGORIES, all_captions)
    weights = category_weights or {}
    unknown = sorted(set(weights) - set(CATEGORIES))
    if unknown:
        raise DiffalignError(f"unknown shapes categories {unknown}; valid choices: {', '.join(CATEGORIES)}")
    odds = np.array([float(weights.get(c, 1.0)) for c in CATEGORIES])
    if (odds < 0).any() or odds.sum() <= 0:
        raise DiffalignError(f"category weights {weights} must be non-negative and not all zero")
    odds = odds / odds.sum()
    captions = []
    for _ in range(size):
        pool = pools[int(rng.choice(len(pools), p=odds))] if category_weights else pools[int(rng.integers(len(pools)))]
        captions.append(pool[int(rng.integers(len(pool)))])
    scenes = [sample_scene(c, rng, exclude_held_out=True) for c in captions]
    return [c.text() for c in captions], render_batch(scenes)


_POOLS: list = []


def _training_pools(categories, all_captions) -> list:
    if not _POOLS:
        _POOLS.extend([c for c in all_captions(category) if not c.held_out] for category in categories)
    return _POOLS
