"""The base `shapes` model on the test prompts: GenEval-style verifier accuracy per category, and fidelity.

    python benchmarks/shapes_base.py [--quick] [--threads 1]

* accuracy: the strict ``shapes-verifier`` (GenEval's 1/0 per image, Ghosh et al. 2023, arXiv:2310.11513)
  on one sample per row of ``diffalign/data/shapes/prompts/test.jsonl`` (64 rows per category; the
  quick run takes the first 16 of each), ancestral sampling, ``--steps`` steps, CFG ``--cfg``; the
  held-out compositions (never in a training caption) are reported as their own column;
* the same verifier with ``partial=True`` (fraction of clauses that hold);
* fidelity: Frechet distance between shapes-clip image embeddings of the samples and of ground-truth
  renders of the same prompts (the FID formula in shapes-clip's feature space), beside its floor
  (render set vs an independent render set of the same prompts). Alignment runs report the drift of
  this number from the base model's.
* the verifier on ground-truth renders of the same prompts, as a sanity row (should be 1.0);
* shapes-clip's zero-shot accuracy at telling the true caption from perturbed ones (in the notes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.shapes.captions import CATEGORIES  # noqa: E402
from diffalign.shapes.evaluation import (fidelity, fidelity_floor, load_prompts, per_category, renders,  # noqa: E402
                                         sample_images, verifier_accuracy)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, nargs="+", default=[3.0], help="guidance scales to evaluate")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    common.setup(args)
    rows = load_prompts("test")
    if args.quick:
        rows = per_category(rows, 16)
    prompts = [r["prompt"] for r in rows]
    held_out = np.array([r["held_out"] for r in rows])
    model = da.load_model("shapes")
    header = ["model", "CFG", *CATEGORIES, "overall", "held-out rows", "partial (overall)", "fidelity FD", "seconds"]
    table = []
    results = {}
    truth = renders(prompts, seed=args.seed + 99)
    acc = verifier_accuracy(truth, prompts)
    table.append(["ground-truth renders", "-", *[f"{acc[c]:.2f}" for c in CATEGORIES], f"{acc['overall']:.3f}", "-",
                  "-", f"{fidelity_floor(prompts):.3f} (floor)", "-"])
    for guidance in args.cfg:
        start = time.time()
        images = sample_images(model, prompts, steps=args.steps, guidance=guidance, seed=args.seed)
        seconds = time.time() - start
        strict = verifier_accuracy(images, prompts)
        partial = verifier_accuracy(images, prompts, partial=True)
        scores = da.rewards.get("shapes-verifier")(images, prompts=prompts).numpy()
        held = float(scores[held_out].mean()) if held_out.any() else float("nan")
        distance = fidelity(images, prompts)
        table.append(["shapes (base)", f"{guidance:g}", *[f"{strict[c]:.2f}" for c in CATEGORIES],
                      f"{strict['overall']:.3f}", f"{held:.2f} (n={int(held_out.sum())})", f"{partial['overall']:.3f}",
                      f"{distance:.3f}", f"{seconds:.0f}"])
        key = f"cfg{guidance:g}".replace(".", "_")
        results[f"{key}_overall"] = f"{strict['overall']:.3f}"
        results[f"{key}_fd"] = f"{distance:.3f}"
        print(f"CFG {guidance:g}: " + ", ".join(f"{c} {strict[c]:.2f}" for c in CATEGORIES)
              + f"; overall {strict['overall']:.3f}; held-out {held:.2f}; FD {distance:.3f}; {seconds:.0f}s", flush=True)
        if guidance == args.cfg[0]:
            da.save_grid(images[:96], common.RESULTS / f"shapes_base{'-quick' if args.quick else ''}.png", nrow=16)
    notes = (f"{len(prompts)} test prompts ({len(prompts) // len(CATEGORIES)} per category), one sample each, "
             f"ancestral sampling, {args.steps} steps, seed {args.seed}. Accuracy: strict shapes-verifier (GenEval's "
             "1/0), mean per category, overall = mean of the category means. Held-out rows: prompts with a "
             "composition no training caption contains. Fidelity: Frechet distance of shapes-clip image "
             "embeddings, samples vs ground-truth renders of the same prompts; the floor is render set vs render "
             f"set. Command: `python benchmarks/shapes_base.py{' --quick' if args.quick else ''} --threads {args.threads}"
             f" --cfg {' '.join(f'{g:g}' for g in args.cfg)}`.")
    from diffalign.shapes.clip import load_shapes_clip, zero_shot_accuracy

    zero_shot = zero_shot_accuracy(load_shapes_clip())  # the reward guidance and fidelity features' own check
    notes += ("\n\nshapes-clip zero-shot (true caption of a fresh render scored above a perturbed one, test prompts; "
              "category/perturbation: accuracy (pairs)): "
              + ", ".join(f"{cat}/{kind} {c / t:.3f} ({t})" for (cat, kind), (c, t) in sorted(zero_shot.items())) + ".")
    path = common.write_markdown("shapes_base", "Base `shapes` model: verifier accuracy and fidelity", table, header,
                                 notes, args.quick)
    print(f"wrote {path}")
    common.result_line("shapes_base", **results)


if __name__ == "__main__":
    main()
