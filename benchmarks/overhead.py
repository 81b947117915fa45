"""Tree samplers' wall time per NFE against their flat baselines at equal budget (digits UNet).

    python benchmarks/overhead.py [--quick] [--nfe 10000] [--repeats 2]

Each pair spends the same ``nfe`` budget on the same model (the embedded ``digits`` UNet, 50 steps,
reward ``digit`` with target 3, evaluated inside every timing), at each sampler's *default* options:

* ``dts`` (exact tree, the default) vs ``sir``;
* ``dts`` with ``preset="paper"`` vs ``sir``;
* ``dts-star`` vs ``best-of-n`` (one output, N = nfe / 50 candidates).

The runs are interleaved (sir, dts, paper, best-of-n, dts-star, then again) and each sampler's median
is kept, so a slow spell of a shared machine hits every sampler alike; the table reports the ratios
of wall time per NFE. Target (issue 11): dts <= 1.15x SIR, dts-star <= 1.15x best-of-N.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402

STEPS = 50
# label -> (sampler, options, outputs)
RUNS = {
    "sir": ("sir", {}, 16),
    "dts": ("dts", {}, 16),
    "dts (paper preset)": ("dts", {"preset": "paper"}, 16),
    "best-of-n": ("best-of-n", {}, 1),
    "dts-star": ("dts-star", {}, 1),
    # wider batches than the default 16 selections: fuller model calls, a different search (not validated)
    "dts-star (64 rows)": ("dts-star", {"leaves_per_iteration": 64}, 1),
}
PAIRS = {"dts": "sir", "dts (paper preset)": "sir", "dts-star": "best-of-n", "dts-star (64 rows)": "best-of-n"}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--nfe", type=int, default=None, help="budget per run (default 10,000; 2,000 with --quick)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 2)")
    args = p.parse_args()
    common.setup(args)
    nfe = args.nfe or (2_000 if args.quick else 10_000)
    repeats = args.repeats or 2
    model = da.load_model("digits")
    reward = da.rewards.get("digit", target=3)
    da.sample(model, reward, num_samples=32, steps=5)  # warm-up (lazy imports, allocator)
    seconds = {label: [] for label in RUNS}
    spent, infos = {}, {}
    for rep in range(repeats):
        for label, (sampler, options, outputs) in RUNS.items():
            start = time.perf_counter()
            out = da.sample(model, reward, sampler=sampler, num_samples=outputs, nfe=nfe, steps=STEPS, seed=rep,
                            progress=False, **options)
            seconds[label].append(time.perf_counter() - start)
            spent[label], infos[label] = out.nfe, out.info
            print(f"repeat {rep} {label:20s} {out.nfe:,} NFE in {seconds[label][-1]:.1f}s "
                  f"({seconds[label][-1] / out.nfe * 1e6:.0f} us/NFE)")
    per_nfe = {label: statistics.median(s) / spent[label] for label, s in seconds.items()}
    rows, ratios = [], {}
    for label in RUNS:
        base = PAIRS.get(label)
        ratio = per_nfe[label] / per_nfe[base] if base else None
        if base:
            ratios[{"dts (paper preset)": "paper", "dts-star (64 rows)": "dts-star-64"}.get(label, label)] = f"{ratio:.3f}"
        reuse = infos[label].get("prefix_reuse")
        rows.append([label, f"{spent[label]:,}", f"{per_nfe[label] * 1e6:.0f}",
                     f"{ratio:.2f}x {base}" if base else "baseline", f"{reuse:.2f}" if reuse is not None else "-"])
    notes = (f"`python benchmarks/overhead.py{' --quick' if args.quick else ''}`: budget {nfe:,} NFE per run, {STEPS} "
             f"steps, every sampler at its defaults, median of {repeats} interleaved repeat(s). Wall times were measured "
             "on a 2-core machine shared with other jobs: compare the ratios (same run), not the absolute figures. "
             "`prefix reuse` = share of NFE a tree saved against independent rollouts of its leaves.")
    path = common.write_markdown("overhead", "Tree samplers vs flat baselines: wall time per NFE at equal budget", rows,
                                 ["sampler", "NFE", "us / NFE", "ratio", "prefix reuse"], notes, args.quick)
    print(f"wrote {path}")
    common.result_line("overhead", **{f"{k}_ratio": v for k, v in ratios.items()})


if __name__ == "__main__":
    main()
