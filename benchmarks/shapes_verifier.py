"""shapes-verifier against the ground truth on rendered scenes, plain and hard cases.

    python benchmarks/shapes_verifier.py [--quick]

A scene agrees when the verifier finds exactly the scene's objects (shape and colour) and every clause of
its caption holds. Captions: every caption of the grammar, repeated; hard cases: objects allowed to
touch (bounding boxes 0 px apart), all at the smallest radius, the first object against an image edge.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from diffalign.shapes.captions import CATEGORIES, all_captions  # noqa: E402
from diffalign.shapes.scenes import render_batch, sample_scenes  # noqa: E402
from diffalign.shapes.verifier import caption_clauses, detect_objects  # noqa: E402

CASES = {
    "plain (training layout, 2 px gaps)": {},
    "touching": {"min_gap": 0},
    "smallest size, touching": {"min_gap": 0, "radius": 4},
    "at the border": {"border": True},
    "smallest, touching, at the border": {"min_gap": 0, "radius": 4, "border": True},
}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    common.setup(args)
    repeats = 2 if args.quick else 10
    captions = [c for cat in CATEGORIES for c in all_captions(cat)] * repeats
    table, total, agreed = [], 0, 0
    for seed, (name, options) in enumerate(CASES.items()):
        start = time.time()
        scenes = sample_scenes(captions, seed=100 + seed, **options)
        per_category = {c: [0, 0] for c in CATEGORIES}
        for caption, scene, image in zip(captions, scenes, render_batch(scenes)):
            found = detect_objects(image)
            ok = (sorted((o.shape, o.colour) for o in found) == sorted((o.shape, o.colour) for o in scene.objects)
                  and all(caption_clauses(caption, found)))
            per_category[caption.category][0] += ok
            per_category[caption.category][1] += 1
        hits = sum(v[0] for v in per_category.values())
        total += len(captions)
        agreed += hits
        table.append([name, len(captions), f"{hits / len(captions):.4f}",
                      *[f"{v[0] / v[1]:.3f}" for v in per_category.values()], f"{len(captions) / (time.time() - start):.0f}"])
        print(table[-1], flush=True)
    table.append(["all", total, f"{agreed / total:.4f}", *["" for _ in CATEGORIES], ""])
    notes = f"Command: `python benchmarks/shapes_verifier.py{' --quick' if args.quick else ''}`."
    common.write_markdown("shapes_verifier", "shapes-verifier agreement with the ground truth on renders", table,
                          ["scenes", "n", "agreement", *CATEGORIES, "scenes/s"], notes, args.quick)
    common.result_line("shapes_verifier", agreement=f"{agreed / total:.4f}", scenes=total)


if __name__ == "__main__":
    main()
