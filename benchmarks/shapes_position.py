"""Does a `shapes` model follow the relation word? Position captions, correct vs reversed relation.

    python benchmarks/shapes_position.py [--quick] [--model shapes|DIR] [--lora RUN/final] [--samples 4]

For every position caption ("a circle left of a square") of the prompt files (train and test share
them: position captions name no colour, so none is a held-out composition), draws ``--samples`` images (ancestral, 20 steps, CFG 3, seed 0) and, with the verifier's own
detector, counts the images whose objects are all there (every clause but the relation holds), and
among those the ones where the relation holds, and where the *opposite* relation holds (left <-> right,
above <-> below). A model that ignores the relation word puts the pair either way about equally
often: correct ~ reversed. That separates "cannot place objects" from "does not read the relation",
which the strict score alone does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def relation_counts(images, prompts) -> dict[str, int]:
    """Images with all objects present; of those, relation correct; and relation reversed."""
    from diffalign.shapes.captions import parse_caption
    from diffalign.shapes.verifier import caption_clauses, detect_objects, relation_holds

    counts = {"images": len(prompts), "objects_ok": 0, "correct": 0, "reversed": 0}
    for prompt, image in zip(prompts, images):
        caption, objects = parse_caption(prompt), detect_objects(image)
        clauses = caption_clauses(caption, objects)
        if not all(clauses[:-1]):
            continue
        counts["objects_ok"] += 1
        counts["correct"] += clauses[-1]
        first = [o for o in objects if o.shape == caption.groups[0].shape]
        second = [o for o in objects if o.shape == caption.groups[1].shape]
        counts["reversed"] += any(relation_holds(OPPOSITE[caption.relation], a, b) for a in first for b in second)
    return counts


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=4, help="images per position caption")
    p.add_argument("--model", default="shapes", help="the shipped model, or a pipeline directory (e.g. a retrained one)")
    p.add_argument("--lora", default=None, help="a LoRA (a run's final/) to evaluate instead of the base model")
    args = p.parse_args()
    common.setup(args)
    import diffalign as da
    from diffalign.shapes.evaluation import load_prompts, sample_images

    model = da.load_model(args.model, lora=args.lora) if args.lora else da.load_model(args.model)
    label = ("shapes (base)" if args.model == "shapes" else args.model) + (f" + {args.lora}" if args.lora else "")
    # the position captions carry no colour, so no held-out composition: train and test share them
    captions = sorted({row["prompt"] for split in ("train", "test") for row in load_prompts(split)
                       if row["category"] == "position"})
    if args.quick:
        captions = captions[:8]
    prompts = [c for c in captions for _ in range(args.samples)]
    counts = relation_counts(sample_images(model, prompts, steps=20, guidance=3.0, seed=0), prompts)
    ok = max(counts["objects_ok"], 1)
    table = [[label, len(captions), counts["images"],
              f"{counts['objects_ok'] / counts['images']:.2f}", f"{counts['correct'] / ok:.2f}",
              f"{counts['reversed'] / ok:.2f}", f"{counts['correct'] / counts['images']:.2f}"]]
    header = ["model", "captions", "images", "objects all present", "relation correct (of those)",
              "relation reversed (of those)", "strict"]
    notes = (f"Model: {label}; ancestral, 20 steps, CFG 3, seed 0, "
             f"{args.samples} images per caption. Correct and reversed are counted among images whose objects "
             "are all present; their sum can exceed 1 when several pairs exist, and fall short of 1 when the "
             "pair is within the verifier's 3 px margin. Command: `python benchmarks/shapes_position.py"
             + (" --quick" if args.quick else "") + (f" --model {args.model}" if args.model != "shapes" else "") + (f" --lora {args.lora}" if args.lora else "") + "`")
    suffix = ("" if args.model == "shapes" else "-" + Path(args.model).name) + ("-lora" if args.lora else "")
    path = common.write_markdown("shapes_position" + suffix,
                                 "shapes: does the model read the relation word?", table, header, notes, args.quick)
    print(f"wrote {path}")
    common.result_line("shapes_position", correct=f"{counts['correct'] / ok:.2f}",
                       reversed=f"{counts['reversed'] / ok:.2f}", objects_ok=f"{counts['objects_ok'] / counts['images']:.2f}")

if __name__ == "__main__":
    main()
