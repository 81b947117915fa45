"""Fine-tuning on the `shapes` world (GRPO, Flow-DPO, RWR): GenEval-style test accuracy against wall-clock time.

Flow-GRPO's headline (GenEval 63% -> 95% on SD3.5-M), in miniature: `configs/<method>_shapes.yaml` trains
a LoRA on the train prompts with the verifier's clause fractions (`shapes-verifier`, partial=True) and
evaluates the test prompts (64 rows per category, one sample each, fixed seeds) with the strict
verifier while it trains (`eval.jsonl`). This script runs that preset (or reads a finished run with
`--run-dir`) and reports, per evaluation, the accuracy per GenEval category, the overall score (the
mean of the category means, as GenEval), the held-out compositions' accuracy and the wall time; with
`--fidelity`, the fidelity drift of the final LoRA (Frechet distance in shapes-clip's image space to
renders of the same prompts, as `benchmarks/shapes_base.py`) against the base model's.
Target (issue, GRPO): overall >= 0.90, no category below 0.75, within 30 CPU-minutes; fidelity drift
within 2x. Flow-DPO and RWR get a row each at the same budget.

    python benchmarks/shapes_training.py [--method grpo|flow_dpo|rwr] [--quick] [--run-dir DIR] [--fidelity]
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("grpo", "flow_dpo", "rwr")


def accuracy_table(run_dir: Path, times: dict[int, float] | None = None) -> list[dict]:
    """One row per evaluation: step, minutes since the base evaluation, per-category, overall, held-out."""
    from diffalign.shapes.captions import CATEGORIES
    from diffalign.shapes.evaluation import load_prompts

    rows_meta = load_prompts("test")
    lines = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines() if x.strip()]
    start = lines[0].get("time") or (times or {}).get(0)
    table = []
    for i, line in enumerate(lines):
        scores = line["rewards"]["shapes-verifier"]["per_prompt"]
        by_category, held_out = defaultdict(list), []
        for meta, score in zip(rows_meta, scores):
            by_category[meta["category"]].append(score)
            if meta.get("held_out"):
                held_out.append(score)
        row = {"step": line["step"], **{c: float(np.mean(by_category[c])) for c in CATEGORIES}}
        row["overall"] = float(np.mean([row[c] for c in CATEGORIES]))
        row["held_out"] = float(np.mean(held_out)) if held_out else float("nan")
        when = line.get("time") or (times or {}).get(i)
        row["minutes"] = (when - start) / 60 if when is not None and start is not None else float("nan")
        table.append(row)
    return table


def read_poll_times(path: Path) -> dict[int, float]:
    """Arrival times of eval.jsonl lines recorded by a poller (for runs whose lines predate the time field)."""
    times = {}
    for text in path.read_text().splitlines():
        key, value = text.split()
        if key != "start":
            times[int(key) - 1] = float(value)
    return times


def final_fidelity(run_dir: Path) -> tuple[float, float, float]:
    """(base, tuned, render floor) fidelity on the test prompts: CFG 3, 20 steps, seed 0, one sample per row."""
    import diffalign as da
    from diffalign.shapes.evaluation import fidelity, fidelity_floor, load_prompts, sample_images

    prompts = [row["prompt"] for row in load_prompts("test")]
    base = da.load_model("shapes")
    tuned = da.load_model("shapes", lora=str(run_dir / "final"))
    return (fidelity(sample_images(base, prompts, steps=20, guidance=3.0, seed=0), prompts),
            fidelity(sample_images(tuned, prompts, steps=20, guidance=3.0, seed=0), prompts), fidelity_floor(prompts))


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--method", choices=METHODS, default="grpo", help="configs/<method>_shapes.yaml")
    p.add_argument("--run-dir", type=Path, default=None, help="read this finished run instead of training")
    p.add_argument("--times", type=Path, default=None, help="poller file of eval-line arrival times (old runs)")
    p.add_argument("--fidelity", action="store_true", help="also measure the final LoRA's fidelity drift")
    args = p.parse_args()
    common.setup(args)
    from diffalign.shapes.captions import CATEGORIES

    run_dir, config = args.run_dir, ROOT / "configs" / f"{args.method}_shapes.yaml"
    if run_dir is None:
        run_dir = ROOT / "runs" / f"shapes-{args.method}{'-quick' if args.quick else ''}"
        overrides = ["train.max_steps=4", "data.eval_every=2"] if args.quick else []
        subprocess.run([sys.executable, "-m", "diffalign", "train", str(config), "--output-dir", str(run_dir),
                        "--overwrite", *overrides], check=True)
    table = accuracy_table(run_dir, read_poll_times(args.times) if args.times else None)
    header = ["step", "minutes", *CATEGORIES, "overall", "held-out"]
    rows = [[r["step"], f"{r['minutes']:.1f}", *(f"{r[c]:.2f}" for c in CATEGORIES), f"{r['overall']:.3f}",
             f"{r['held_out']:.2f}"] for r in table]
    notes = (f"`configs/{args.method}_shapes.yaml`, run directory `{run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir}`: "
             "strict shapes-verifier on the 384 test rows (64 per category, one sample each, CFG 3, 20 steps, fixed "
             "seeds), 'overall' = mean of the category means (GenEval). Minutes: wall time since the base "
             f"evaluation (step 0), on this 2-core CPU. Command: `python benchmarks/shapes_training.py --method {args.method}"
             + (" --quick" if args.quick else f" --run-dir {args.run_dir}" if args.run_dir else "")
             + (f" --times {args.times}" if args.times else "")
             + (" --fidelity`" if args.fidelity else "`"))
    final = table[-1]
    extra = {}
    if args.fidelity:
        base, tuned, floor = final_fidelity(run_dir)
        notes += f"\n\nFidelity (Frechet distance in shapes-clip image space to renders; render-vs-render floor {floor:.4f}): base {base:.4f}, " \
                 f"after {args.method} {tuned:.4f} ({tuned / base:.2f}x the base; target within 2x)."
        extra = {"fidelity_ratio": f"{tuned / base:.2f}"}
    path = common.write_markdown(f"shapes_{args.method}", f"{args.method} on shapes: test-prompt accuracy against wall-clock time", rows,
                                 header, notes, args.quick)
    print(f"wrote {path}")
    worst = min(final[c] for c in CATEGORIES)
    met = final["overall"] >= 0.90 and worst >= 0.75 and final["minutes"] <= 30
    common.result_line(f"shapes_{args.method}", base_overall=f"{table[0]['overall']:.3f}", final_overall=f"{final['overall']:.3f}",
                       worst_category=f"{worst:.2f}", minutes=f"{final['minutes']:.1f}", step=final["step"],
                       met=str(met).lower(), **extra)


if __name__ == "__main__":
    main()
