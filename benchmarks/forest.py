"""A forest of trees: DTS* and DTS over a prompt set, sharing model calls (design.md §3b).

On the embedded ``digits`` UNet with the prompt-aware ``digit`` reward (each prompt names a digit), it
measures wall time per NFE of one prompt-set call with 1, 4, 16 and 64 prompts -- one tree per prompt,
all trees sharing every model call -- against best-of-n (for ``dts-star``) and SIR (for ``dts``) over
the same prompts at the same NFE per prompt, and the rows per shared call. Targets (issue): at 16
trees, dts-star <= 1.15x best-of-n per NFE and dts <= 1.10x SIR.

Each tree's search is that of the tree alone (tests/test_forest.py checks samples, rewards and NFE bit
for bit), so search quality per tree is unchanged by construction; ``--reach`` also measures, over 16
prompts, the wall time DTS* needs to reach best-of-n's reward at ``--reach-nfe`` NFE per prompt (the
issue's 1e5; the full default) against best-of-n's own time.

    python benchmarks/forest.py [--quick] [--reach]
"""

from __future__ import annotations

import time
import warnings

import diffalign as da
from common import parser, result_line, setup, write_markdown

STEPS = 50


def per_nfe(model, reward, sampler: str, prompts: list[str], nfe: int, options: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    out = da.sample(model, reward, sampler=sampler, prompts=prompts, num_samples=1, nfe=nfe, steps=STEPS, seed=0,
                    progress=False, **options)
    seconds = time.perf_counter() - start
    return 1e6 * seconds / out.nfe, out.info


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--reach", action="store_true", help="also measure the wall time to reach best-of-n's reward")
    p.add_argument("--reach-nfe", type=float, default=1e5)
    args = p.parse_args()
    setup(args)
    warnings.simplefilter("ignore", da.SamplingWarning)
    model = da.load_model("digits")
    reward = da.rewards.get("digit")  # no target: each prompt names its digit
    counts = [1, 4, 16] if args.quick else [1, 4, 16, 64]
    nfe = 1_000 if args.quick else 4_000
    per_prompt_nfe = {1: nfe, 4: nfe, 16: nfe, 64: nfe // 2}
    da.sample(model, reward, sampler="dts-star", prompts=["0", "1"], nfe=500, steps=STEPS, progress=False)  # warm-up
    rows, ratios = [], {}
    for count in counts:
        prompts = [str(i % 10) for i in range(count)]
        budget = per_prompt_nfe[count]
        for tree, baseline, options in (("dts-star", "best-of-n", {}), ("dts", "sir", {})):
            us_tree, info = per_nfe(model, reward, tree, prompts, budget, options)
            us_base, _ = per_nfe(model, reward, baseline, prompts, budget, {})
            ratio = us_tree / us_base
            ratios[(tree, count)] = ratio
            rows.append([tree, count, budget, f"{us_tree:.0f}", baseline, f"{us_base:.0f}", f"{ratio:.2f}",
                         f"{info.get('rows_per_call', float('nan')):.0f}"])
            print(rows[-1], flush=True)
    notes = (f"`digits` UNet, {STEPS} steps, reward `digit` reading each prompt; one prompt-set call per row, one "
             "tree per prompt, every tree's rows in shared calls (max_rows 256). NFE per prompt as listed. "
             "Command: `python benchmarks/forest.py" + (" --quick`" if args.quick else "`"))
    if args.reach:
        notes += "\n\n" + reach(model, reward, int(args.reach_nfe))
    path = write_markdown("forest", "Forest of trees: µs per NFE against best-of-n and SIR", rows,
                          ["sampler", "trees (prompts)", "NFE per prompt", "µs / NFE", "baseline", "baseline µs / NFE",
                           "ratio", "rows per call"], notes, args.quick)
    print(f"wrote {path}")
    star, exact = ratios.get(("dts-star", 16)), ratios.get(("dts", 16))
    result_line("forest", dts_star_vs_best_of_n_16=f"{star:.2f}", target_star="1.15", dts_vs_sir_16=f"{exact:.2f}",
                target_dts="1.10", met=str(star <= 1.15 and exact <= 1.10).lower())


def reach(model, reward, budget: int) -> str:
    """Wall time for DTS* (16 prompts, one forest) to reach best-of-n's mean reward at ``budget`` per prompt."""
    prompts = [str(i % 10) for i in range(16)]
    start = time.perf_counter()
    base = da.sample(model, reward, sampler="best-of-n", prompts=prompts, nfe=budget, steps=STEPS, seed=0, progress=False)
    base_seconds = time.perf_counter() - start
    target = base.rewards.mean().item()
    lines = [f"Reach: best-of-n at {budget} NFE per prompt over 16 prompts: mean reward {target:.4f} in {base_seconds:.1f} s."]
    for nfe in sorted({budget // 64, budget // 16, budget // 4, budget}):
        start = time.perf_counter()
        out = da.sample(model, reward, sampler="dts-star", prompts=prompts, nfe=nfe, steps=STEPS, seed=0, progress=False)
        seconds = time.perf_counter() - start
        got = out.rewards.mean().item()
        lines.append(f"DTS* at {nfe} NFE per prompt: mean reward {got:.4f} in {seconds:.1f} s "
                     f"({'reaches' if got >= target else 'below'}; {base_seconds / seconds:.1f}x less wall time).")
        if got >= target:
            break
    return " ".join(lines)


if __name__ == "__main__":
    main()
