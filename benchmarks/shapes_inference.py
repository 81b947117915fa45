"""Inference-time alignment on `shapes` at equal NFE per prompt: GenEval-style accuracy per category.

    python benchmarks/shapes_inference.py [--quick] [--threads 1] [--per-category 16] [--nfe 160]

* prompts: the first ``--per-category`` rows of each category of ``diffalign/data/shapes/prompts/test.jsonl``
  (the quick run: 2 per category); one output image per prompt and method;
* budget: at most ``--nfe`` model evaluations per prompt for every method but the base row (the
  samplers' own count, backward passes included; :mod:`diffalign.shapes.inference` says how each
  method spends it);
* score: the strict ``shapes-verifier`` (GenEval's 1/0 per image, Ghosh et al. 2023, arXiv:2310.11513),
  mean per category, overall = mean of the category means; the held-out compositions on their own;
* the search methods (best-of-n, SMC, DTS*) optimise the verifier with ``partial=True``; reward guidance and
  ReNO optimise the differentiable shapes-clip CLIPScore (the verifier has no gradient);
* reward guidance's scale and gradient clip are picked first by a small sweep on *train* prompts (never
  the test prompts), scored by the same strict verifier;
* wall time per method, on this machine (the sweep's time is reported apart).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.shapes import inference  # noqa: E402
from diffalign.shapes.captions import CATEGORIES  # noqa: E402
from diffalign.shapes.evaluation import load_prompts, per_category, verifier_accuracy  # noqa: E402

# (scale, max_grad_norm) candidates for reward guidance; shapes-clip's CLIPScore is on a 0-100 scale
SWEEP = [(0.01, None), (0.03, None), (0.1, None), (0.1, 1.0), (0.3, 1.0)]
QUICK_SWEEP = [(0.03, None), (0.1, 1.0)]


def sweep_guidance(model, candidates, rows, nfe: int, seed: int):
    """(best (scale, clip), table rows, seconds): strict verifier accuracy of each candidate on train prompts."""
    prompts = [r["prompt"] for r in rows]
    start = time.perf_counter()
    scored = []
    for scale, clip in candidates:
        run = inference.run_method("reward-guidance", model, prompts, nfe, seed=seed, metadata=rows,
                                   guidance_scale=scale, guidance_clip=clip)
        accuracy = verifier_accuracy(run.images, prompts)["overall"]
        scored.append(((scale, clip), accuracy))
        print(f"sweep (train prompts): scale {scale:g}, clip {clip}: strict accuracy {accuracy:.3f} "
              f"({run.seconds:.0f}s)", flush=True)
    best = max(scored, key=lambda item: item[1])[0]  # ties: the first, i.e. the gentler setting
    return best, scored, time.perf_counter() - start


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--per-category", type=int, default=None, help="test prompts per category (default 16; quick 2)")
    p.add_argument("--nfe", type=int, default=None, help="NFE budget per prompt (default 160; quick 80)")
    p.add_argument("--sweep-per-category", type=int, default=None, help="train prompts per category in the sweep")
    p.add_argument("--methods", nargs="+", choices=inference.METHODS, default=list(inference.METHODS),
                   help="a subset (its results go to their own file, named after the methods and the budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lora", default=None, help="a fine-tuned LoRA (a run's final/) on the shapes model: training and "
                                                 "inference together (its results go to their own file)")
    args = p.parse_args()
    common.setup(args)
    per_cat = args.per_category or (2 if args.quick else 16)
    nfe = args.nfe or (80 if args.quick else 160)
    sweep_per_cat = args.sweep_per_category or (1 if args.quick else 2)
    rows = per_category(load_prompts("test"), per_cat)
    prompts = [r["prompt"] for r in rows]
    held_out = np.array([r["held_out"] for r in rows])
    model = da.load_model("shapes", lora=args.lora) if args.lora else da.load_model("shapes")
    verifier = da.rewards.get("shapes-verifier")

    train_rows = per_category(load_prompts("train"), sweep_per_cat, spread=True)
    if "reward-guidance" in args.methods:
        (scale, clip), scored, sweep_seconds = sweep_guidance(model, QUICK_SWEEP if args.quick else SWEEP, train_rows,
                                                              nfe, args.seed)
        print(f"picked guidance scale {scale:g}, clip {clip} ({sweep_seconds:.0f}s)", flush=True)
    else:
        (scale, clip), scored, sweep_seconds = (inference.GUIDANCE_SCALE, inference.GUIDANCE_CLIP), [], 0.0

    header = ["method", "optimises", "settings", "NFE / prompt", *CATEGORIES, "overall", "held-out rows", "seconds"]
    table, results = [], {}
    for method in args.methods:
        run = inference.run_method(method, model, prompts, nfe, seed=args.seed, metadata=rows,
                                   guidance_scale=scale, guidance_clip=clip)
        strict = verifier_accuracy(run.images, prompts)
        held = verifier(run.images, prompts=prompts).numpy()[held_out].mean() if held_out.any() else float("nan")
        table.append([method, inference.OPTIMISES[method], run.settings, f"{run.nfe_per_prompt:.0f}",
                      *[f"{strict[c]:.2f}" for c in CATEGORIES], f"{strict['overall']:.3f}",
                      f"{held:.2f} (n={int(held_out.sum())})" if held_out.any() else "- (none)", f"{run.seconds:.0f}"])
        results[method.replace("-", "_")] = f"{strict['overall']:.3f}"
        print(f"{method:16s} NFE/prompt {run.nfe_per_prompt:5.0f}: " + ", ".join(f"{c} {strict[c]:.2f}" for c in CATEGORIES)
              + f"; overall {strict['overall']:.3f}; held-out {held:.2f}; {run.seconds:.0f}s", flush=True)
    subset = list(args.methods) != list(inference.METHODS)
    command = (f"python benchmarks/shapes_inference.py{' --quick' if args.quick else ''} --threads {args.threads} "
               f"--per-category {per_cat} --nfe {nfe}" + (f" --methods {' '.join(args.methods)}" if subset else "")
               + (f" --lora {args.lora}" if args.lora else ""))
    name = f"shapes_inference-{'-'.join(args.methods)}-nfe{nfe}" if subset else "shapes_inference"
    if args.lora:
        name += "-" + Path(args.lora).resolve().parent.name
    notes = ((f"Model: shapes + the LoRA {args.lora}. " if args.lora else "") + f"{len(prompts)} test prompts (the first {per_cat} of each category), one image per prompt and method, "
             f"seed {args.seed}, CFG {inference.CFG_SCALE:g}. Budget: at most {nfe} NFE per prompt (the base row "
             f"spends {2 * inference.STEPS}); backward passes count as NFE, reward calls do not. Accuracy: strict "
             "shapes-verifier (GenEval's 1/0), mean per category, overall = mean of the category means. Search "
             f"reward: {inference.SEARCH_REWARD}; gradient reward: {inference.GRADIENT_REWARD}. Reward guidance: "
             + (f"scale and clip picked on {len(train_rows)} train prompts (evenly spread, {sweep_per_cat} per category) "
                "by strict accuracy: " + "; ".join(f"scale {s:g}, clip {c}: {a:.3f}" for (s, c), a in scored)
                + f" -> scale {scale:g}, clip {clip} (sweep {sweep_seconds:.0f} s, not in the table)" if scored
                else "not run") + ". Seconds: wall "
             f"time of each method's sampling and decoding, rewards included. Command: `{command}`.")
    path = common.write_markdown(name, "Inference-time alignment on `shapes` at equal NFE per prompt",
                                 table, header, notes, args.quick)
    common.write_json(name, {"command": command, "nfe_per_prompt": nfe, "prompts": len(prompts),
                                           "guidance": {"scale": scale, "clip": clip,
                                                        "sweep": [[s, c, a] for (s, c), a in scored],
                                                        "sweep_seconds": sweep_seconds},
                                           "header": header, "rows": table}, args.quick)
    print(f"wrote {path}")
    common.result_line("shapes_inference", nfe_per_prompt=nfe, **results)


if __name__ == "__main__":
    main()
