"""DTS on an exact Gaussian oracle with a linear reward: output mean vs the exact tilted mean.

    python benchmarks/dts_bias.py [--quick]

Base: the 20-step DDPM chain of the exact denoiser of N(0, I) in 2-D (VP linear 1e-4..0.02 over 1000
steps), whose output is N(0, s^2) with s^2 estimated from 200k samples. Reward r(x) = x[0], lambda = 1:
the tilted target is N(s^2, s^2) in x[0], so the exact mean is s^2. Compares SIR with DTS under
several progressive-widening settings (branching every 5 steps) at two budgets; a setting that
reaches the target only at the larger budget converges, one that stays put is biased. The exact
default (``dts``) is unbiased for Z and consistent; the paper preset under-tilts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.oracles import gaussian_denoiser  # noqa: E402

STEPS = 20
# short name (for the RESULT line) -> (label, sampler, options)
SETTINGS = {
    "sir": ("sir", "sir", {}),
    # the default: exact weights, real branching (three levels every 5 steps, 8 leaves per root)
    "dts": ("dts (exact, branch every 5)", "dts", {"branch_every": 5}),
    "dts_value": ("dts (exact, branch every 5, allocation=value)", "dts", {"branch_every": 5, "allocation": "value"}),
    "dts_paper": ("dts preset=paper (c_pw=2, alpha=0.8)", "dts", {"preset": "paper", "branch_every": 5}),
    # a two-level tree: noises x_1 that widen, each rolled out straight to x_0. The bias is already
    # here, so it comes from the adaptive allocation itself, not from nesting estimates
    "dts_paper_noise_level_only": ("dts preset=paper, branching only at x_1", "dts",
                                   {"preset": "paper", "branch_steps": []}),
    "dts_paper_narrow": ("dts preset=paper (c_pw=1, alpha=0.5)", "dts",
                         {"preset": "paper", "branch_every": 5, "c_pw": 1.0, "alpha": 0.5}),
    # the same trees, output by resampling leaves with their selection's importance weight
    "dts_paper_reweight": ("dts preset=paper, output=reweight", "dts",
                           {"preset": "paper", "branch_every": 5, "output": "reweight"}),
}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    common.setup(args)
    rollouts = [1000, 4000] if args.quick else [2000, 8000]
    model = gaussian_denoiser([0.0, 0.0], [1.0, 1.0], da.VPSchedule.linear(1e-4, 0.02, 1000))
    base = da.sample(model, None, num_samples=200_000, steps=STEPS, seed=123, batch_size=200_000)
    exact = base.samples[:, 0].double().var().item()
    print(f"exact tilted mean (chain variance): {exact:.4f}")
    rows, results = [], {}
    for key, (label, sampler, options) in SETTINGS.items():
        means = []
        for n in rollouts:
            out = da.sample(model, lambda x: x[:, 0], sampler=sampler, num_samples=20_000, nfe=n * STEPS, steps=STEPS,
                            seed=0, **options)
            means.append(out.samples[:, 0].double().mean().item())
        rows.append([label] + [f"{m:.3f}" for m in means] + [f"{exact:.3f}"])
        results[key] = f"{means[-1]:.3f}"
        print(f"{label:36s} " + "  ".join(f"{n} rollouts: {m:.3f}" for n, m in zip(rollouts, means)))
    path = common.write_markdown(
        "dts_bias", "DTS vs the exact tilted mean (Gaussian oracle, linear reward)", rows,
        ["sampler", *[f"{n:,} rollouts" for n in rollouts], "exact"],
        f"`python benchmarks/dts_bias.py{' --quick' if args.quick else ''}`: 20 steps, branching every 5, seed 0, "
        "mean of x[0] over 20,000 output draws.", args.quick,
    )
    print(f"wrote {path}")
    common.result_line("dts_bias", exact=f"{exact:.3f}", **results)


if __name__ == "__main__":
    main()
