"""The caption grammar of the shapes world, and its train/test split of compositions.

Six prompt categories follow GenEval (Ghosh et al., "GenEval: An Object-Focused Framework for
Evaluating Text-to-Image Alignment", NeurIPS 2023, arXiv:2310.11513):

=================  ==================================  ===========================================
category           example                             clauses the verifier checks
=================  ==================================  ===========================================
``single_object``  "a circle"                          at least one circle
``two_object``     "a circle and a square"             at least one of each
``counting``       "three circles", "two red squares"  exactly N circles (and exactly N red ones)
``colors``         "a red circle"                      a circle; a red one
``position``       "a circle left of a square"         a circle; a square; the relation
``color_attr``     "a red circle and a blue square"    a circle; a red one; a square; a blue one
=================  ==================================  ===========================================

Like GenEval, "a X" means *at least one* X (a second copy does not fail "a circle"), while a
number word means *exactly* that many. The split holds out compositions, as GenEval's held-out
objects do for detectors: the colour-shape pairs in :data:`HELD_OUT_PAIRS` and the count-shape
combinations in :data:`HELD_OUT_COUNTS` never occur in a training caption (nor, see
:mod:`.scenes`, in a training image), so a model that gets them right has composed what it learnt.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import DiffalignError

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
RELATIONS = ("left of", "right of", "above", "below")
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

#: colour-shape pairs that no training caption (and no training image) contains
HELD_OUT_PAIRS = (("blue", "triangle"), ("yellow", "circle"))
#: count-shape combinations that no training caption contains
HELD_OUT_COUNTS = ((3, "triangle"), (4, "circle"))

_WORD_NUMBERS = {word: n for n, word in NUMBERS.items()}
_PLURALS = {shape + "s": shape for shape in SHAPES}
#: every word a caption can contain (the text encoder's vocabulary is built from these)
VOCABULARY = tuple(sorted({"a", "and", "of", "left", "right", "above", "below", *NUMBERS.values(), *COLOURS,
                           *SHAPES, *_PLURALS}))


@dataclass(frozen=True)
class ObjectGroup:
    """``count`` objects of ``shape`` (with ``colour`` if given); ``exact``: a number word fixes the count."""

    shape: str
    colour: Optional[str] = None
    count: int = 1
    exact: bool = False

    def text(self) -> str:
        colour = f"{self.colour} " if self.colour else ""
        if not self.exact:
            return f"a {colour}{self.shape}"
        noun = self.shape if self.count == 1 else self.shape + "s"
        return f"{NUMBERS[self.count]} {colour}{noun}"


@dataclass(frozen=True)
class Caption:
    """A parsed caption: one or two object groups, and a spatial relation (first group to second) or None."""

    groups: tuple[ObjectGroup, ...]
    relation: Optional[str] = None

    @property
    def category(self) -> str:
        if self.relation is not None:
            return "position"
        if len(self.groups) == 2:
            return "color_attr" if self.groups[0].colour else "two_object"
        group = self.groups[0]
        if group.exact:
            return "counting"
        return "colors" if group.colour else "single_object"

    def text(self) -> str:
        joiner = f" {self.relation} " if self.relation else " and "
        return joiner.join(group.text() for group in self.groups)

    @property
    def held_out(self) -> bool:
        """True when the caption contains a held-out colour-shape pair or count-shape combination."""
        return any((g.colour, g.shape) in HELD_OUT_PAIRS or (g.exact and (g.count, g.shape) in HELD_OUT_COUNTS)
                   for g in self.groups)

    def metadata(self) -> dict:
        """The jsonl fields of this caption (GenEval-like: the category, and what the verifier checks)."""
        return {
            "prompt": self.text(),
            "category": self.category,
            "held_out": self.held_out,
            "objects": [{"shape": g.shape, "colour": g.colour, "count": g.count, "exact": g.exact}
                        for g in self.groups],
            "relation": self.relation,
        }


def parse_caption(text: str) -> Caption:
    """Parse a caption of the grammar; raise one line naming the caption when it is not in the grammar."""
    if not isinstance(text, str):
        raise DiffalignError(f"shapes caption must be a string; got {type(text).__name__}")
    words = text.strip().lower().split()
    relation = None
    for candidate in RELATIONS:
        parts = candidate.split()
        for i in range(len(words) - len(parts) + 1):
            if words[i:i + len(parts)] == parts:
                relation, halves = candidate, [words[:i], words[i + len(parts):]]
                break
        if relation:
            break
    if relation is None:
        halves = _split_and(words)
    groups = tuple(_parse_group(half, text) for half in halves)
    if len(groups) == 2 and groups[0].shape == groups[1].shape:
        raise DiffalignError(f"shapes caption {text!r} names the same shape twice; two-object captions need two shapes")
    if len(groups) == 2 and any(g.exact for g in groups):
        raise DiffalignError(f"shapes caption {text!r}: two-object captions use 'a', not number words")
    if len(groups) == 2 and relation is None and bool(groups[0].colour) != bool(groups[1].colour):
        raise DiffalignError(f"shapes caption {text!r}: colour both objects or neither")
    if relation is not None and any(g.colour for g in groups):
        raise DiffalignError(f"shapes caption {text!r}: position captions name shapes without colours")
    return Caption(groups, relation)


def _split_and(words: list[str]) -> list[list[str]]:
    if "and" not in words:
        return [words]
    i = words.index("and")
    return [words[:i], words[i + 1:]]


def _parse_group(words: list[str], text: str) -> ObjectGroup:
    bad = f"shapes caption {text!r} is not in the grammar"
    if len(words) not in (2, 3):
        raise DiffalignError(f"{bad}: expected '[a|one..four] [colour] shape'; valid colours: {', '.join(COLOURS)}; "
                             f"shapes: {', '.join(SHAPES)}")
    head, noun = words[0], words[-1]
    colour = words[1] if len(words) == 3 else None
    if colour is not None and colour not in COLOURS:
        raise DiffalignError(f"{bad}: unknown colour {colour!r}; valid colours: {', '.join(COLOURS)}")
    if head == "a":
        if noun not in SHAPES:
            raise DiffalignError(f"{bad}: unknown shape {noun!r} after 'a'; valid shapes: {', '.join(SHAPES)}")
        return ObjectGroup(noun, colour, 1, exact=False)
    if head not in _WORD_NUMBERS:
        raise DiffalignError(f"{bad}: unknown word {head!r}; captions start with a, {', '.join(NUMBERS.values())}")
    count = _WORD_NUMBERS[head]
    shape = noun if count == 1 else _PLURALS.get(noun)
    if shape not in SHAPES:
        form = "singular" if count == 1 else "plural"
        raise DiffalignError(f"{bad}: expected a {form} shape after {head!r}; valid shapes: {', '.join(SHAPES)}")
    return ObjectGroup(shape, colour, count, exact=True)


def all_captions(category: str) -> list[Caption]:
    """Every caption of one category, in a fixed order."""
    if category not in CATEGORIES:
        raise DiffalignError(f"unknown shapes category {category!r}; valid choices: {', '.join(CATEGORIES)}")
    pairs = [(a, b) for a in SHAPES for b in SHAPES if a != b]
    if category == "single_object":
        return [Caption((ObjectGroup(s),)) for s in SHAPES]
    if category == "colors":
        return [Caption((ObjectGroup(s, c),)) for s in SHAPES for c in COLOURS]
    if category == "counting":
        return [Caption((ObjectGroup(s, c, n, exact=True),)) for n in NUMBERS for s in SHAPES for c in (None, *COLOURS)]
    if category == "two_object":
        return [Caption((ObjectGroup(a), ObjectGroup(b))) for a, b in pairs]
    if category == "position":
        return [Caption((ObjectGroup(a), ObjectGroup(b)), r) for a, b in pairs for r in RELATIONS]
    return [Caption((ObjectGroup(a, ca), ObjectGroup(b, cb))) for a, b in pairs
            for ca in COLOURS for cb in COLOURS if ca != cb]


def train_captions() -> list[Caption]:
    """All captions without a held-out composition: the prompts training (and alignment) may use."""
    return [c for category in CATEGORIES for c in all_captions(category) if not c.held_out]


def evaluation_captions(per_category: int = 64, seed: int = 0) -> list[Caption]:
    """``per_category`` evaluation rows per category, drawn from *all* captions of the category.

    Categories with fewer distinct captions than ``per_category`` repeat them in a cycle (as GenEval
    scores several images per prompt), so each category gets the same number of samples; larger
    categories are subsampled without repetition. Held-out captions keep their share, and the
    ``held_out`` field lets an evaluation report them separately.
    """
    rng = random.Random(seed)
    rows: list[Caption] = []
    for category in CATEGORIES:
        pool = all_captions(category)
        rng.shuffle(pool)
        if len(pool) >= per_category:
            rows += pool[:per_category]
        else:
            rows += [pool[i % len(pool)] for i in range(per_category)]
    return rows


def write_prompt_files(directory: str | Path, per_category: int = 64, seed: int = 0) -> dict[str, Path]:
    """Write ``{train,test}.txt`` (one prompt a line) and ``{train,test}.jsonl`` (prompt + metadata)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, captions in (("train", train_captions()), ("test", evaluation_captions(per_category, seed))):
        (directory / f"{split}.txt").write_text("".join(c.text() + "\n" for c in captions))
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(c.metadata()) + "\n" for c in captions))
        written[split] = directory / f"{split}.jsonl"
    return written


#: what a perturbation changes, for each category (the zero-shot test of shapes-clip uses these)
PERTURBATIONS = {
    "single_object": ("shape",),
    "two_object": ("shape",),
    "counting": ("count", "colour"),
    "colors": ("colour", "shape"),
    "position": ("position",),
    "color_attr": ("colour",),
}


def perturbations(caption: Caption, kind: str) -> list[Caption]:
    """Captions that differ from ``caption`` in one way: ``kind`` in shape, colour, count, position.

    colour: one group's colour replaced, or (two coloured groups) the colours swapped between the objects
    (attribute binding); count: another number; position: the opposite relation; shape: one shape
    replaced by one the caption does not name. Grammar rules hold (two objects keep two shapes).
    """
    if kind not in ("shape", "colour", "count", "position"):
        raise DiffalignError(f"unknown perturbation {kind!r}; valid choices: shape, colour, count, position")
    groups = list(caption.groups)
    out: list[Caption] = []

    def replaced(i: int, **changes) -> Caption:
        new = list(groups)
        new[i] = ObjectGroup(**{**groups[i].__dict__, **changes})
        return Caption(tuple(new), caption.relation)

    if kind == "shape":
        named = {g.shape for g in groups}
        out = [replaced(i, shape=s) for i in range(len(groups)) for s in SHAPES if s not in named]
    elif kind == "colour":
        out = [replaced(i, colour=c) for i, g in enumerate(groups) if g.colour for c in COLOURS if c != g.colour
               and not (len(groups) == 2 and c == groups[1 - i].colour)]
        if len(groups) == 2 and groups[0].colour and groups[1].colour:
            swapped = (replace_colour(groups[0], groups[1].colour), replace_colour(groups[1], groups[0].colour))
            out.insert(0, Caption(swapped, caption.relation))
    elif kind == "count":
        out = [replaced(i, count=n) for i, g in enumerate(groups) if g.exact for n in NUMBERS if n != g.count]
    elif caption.relation is not None:
        opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        out = [Caption(caption.groups, opposite[caption.relation])]
    return out


def replace_colour(group: ObjectGroup, colour: str) -> ObjectGroup:
    return ObjectGroup(group.shape, colour, group.count, group.exact)
