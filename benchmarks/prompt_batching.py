"""Prompt batching: one prompt-set call against one call per prompt (issue: prompts all the way through).

16 prompts at a small per-prompt budget (4 samples, 400 NFE per prompt: one prompt alone fills only
small model calls), on the embedded class-conditional ``digits`` model, whose prompts are the digit
labels ("0" .. "9"), scored by the prompt-aware ``digit`` reward (log p(prompt's digit | x)).

For each sampler it times ``da.sample(..., prompts=16 prompts)`` against 16 calls with
``prompts=[prompt i]`` and seed + i -- the prompt-set seeding rule, under which both give the same
samples (up to the floating-point rounding of the network's batched kernels, reported as the largest
difference). Target: the batched call takes <= 0.5x the time of the per-prompt calls.

    python benchmarks/prompt_batching.py [--quick]
"""

from __future__ import annotations

import time
import warnings

import torch

import diffalign as da
from common import parser, result_line, setup, write_markdown

SAMPLERS = {"ancestral": {}, "best-of-n": {}, "sir": {}, "smc": {"resample_every": 5}}


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--nfe", type=int, default=400, help="budget per prompt")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    setup(args)
    repeats = 1 if args.quick else 3
    prompts = [str(i % 10) for i in range(args.prompts)]
    model = da.load_model("digits")
    reward = da.rewards.get("digit")  # no target: each prompt names its digit
    warnings.simplefilter("ignore", da.SamplingWarning)
    rows, ratios = [], []
    for name, options in SAMPLERS.items():
        common = dict(num_samples=args.samples, nfe=args.nfe, steps=args.steps, progress=False, **options)
        da.sample(model, reward, sampler=name, prompts=prompts[:2], seed=0, **common)  # warm-up

        def together():
            return da.sample(model, reward, sampler=name, prompts=prompts, seed=0, **common)

        def separately():
            return [da.sample(model, reward, sampler=name, prompts=[p], seed=i, **common) for i, p in enumerate(prompts)]

        t_batched, batched = timed(together, repeats)
        t_single, singles = timed(separately, repeats)
        alone = torch.cat([o.samples for o in singles])
        diff = (batched.samples - alone).abs().max().item()
        identical = torch.equal(batched.samples, alone)
        ratio = t_batched / t_single
        ratios.append(ratio)
        rows.append([name, batched.nfe, f"{t_single:.2f}", f"{t_batched:.2f}", f"{ratio:.2f}",
                     "yes" if identical else f"no (max diff {diff:.1e})",
                     f"{batched.rewards.mean().item():.3f}", f"{torch.cat([o.rewards for o in singles]).mean().item():.3f}"])
        print(rows[-1], flush=True)
    notes = (f"{args.prompts} prompts ({', '.join(sorted(set(prompts)))} as digit labels) x {args.samples} samples, "
             f"{args.nfe} NFE and {args.steps} steps per prompt, model `digits`, reward `digit` (reads each prompt). "
             f"Best of {repeats} run(s). 'per-prompt calls' = {args.prompts} calls with prompts=[p_i], seed i; "
             "'one call' = one prompt-set call with seed 0 (prompt i seeded 0 + i). "
             "Command: `python benchmarks/prompt_batching.py" + (" --quick`" if args.quick else "`"))
    path = write_markdown("prompt_batching", "Prompt batching: one prompt-set call vs one call per prompt", rows,
                          ["sampler", "NFE (all prompts)", "per-prompt calls (s)", "one call (s)", "ratio",
                           "same samples", "mean reward (one call)", "mean reward (per prompt)"], notes, args.quick)
    print(f"wrote {path}")
    result_line("prompt_batching", worst_ratio=f"{max(ratios):.2f}", target="0.50",
                met=str(max(ratios) <= 0.5).lower(), prompts=args.prompts)


if __name__ == "__main__":
    main()
