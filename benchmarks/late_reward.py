"""Where a tree can beat SIR: rewards decided early vs late in denoising (exact Gaussian oracle).

    python benchmarks/late_reward.py [--quick] [--seeds 40]

Base: the 20-step DDPM chain of the exact denoiser of N(0, s^2 I) in 2-D (VP linear 1e-4..0.02 over
1000 steps). Reward r(x) = x[0] / s, lambda = 1, so the target shifts x[0] by about one standard
deviation whatever s is; its exact mean is Var(chain output) / s, and Z = E[exp(r)] is exact too.

* s = 1: x0 is mostly decided early (at the default branching level t = 0.2, Var(x0 | x_t) is a
  third of Var(x0)): siblings are correlated and a leaf is worth less than an independent rollout.
* s = 0.1: x0 is decided late (98% of its variance is still open at t = 0.2): siblings are nearly
  independent, so every leaf costs 60% of a rollout (prefix reuse 0.40) and is worth almost as much.

Reported over seeds at equal NFE: RMSE of the tilted-mean estimate (the mean of 4,000 output draws)
and the std of log Z-hat (both samplers' Z estimates are unbiased), with wall time per run.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.oracles import gaussian_denoiser  # noqa: E402

STEPS = 20
# label -> (sampler, options)
SAMPLERS = {
    "sir": ("sir", {}),
    "dts": ("dts", {}),
    "dts (allocation=value)": ("dts", {"allocation": "value"}),
    "dts (branch every 5)": ("dts", {"branch_every": 5}),
}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None)
    args = p.parse_args()
    common.setup(args)
    seeds = args.seeds or (15 if args.quick else 40)
    budgets = [500 * STEPS] if args.quick else [500 * STEPS, 5000 * STEPS]
    rows, result = [], {}
    for scale in (1.0, 0.1):
        model = gaussian_denoiser([0.0, 0.0], [scale, scale], da.VPSchedule.linear(1e-4, 0.02, 1000))
        var = da.sample(model, None, num_samples=200_000, steps=STEPS, seed=123, batch_size=200_000,
                        progress=False).samples[:, 0].double().var().item()
        exact_mean, exact_log_z = var / scale, var / (2 * scale**2)

        def reward(x, scale=scale):
            return x[:, 0] / scale

        for nfe in budgets:
            errors = {}
            for label, (sampler, options) in SAMPLERS.items():
                means, log_z, secs, reuse = [], [], [], 0.0
                for seed in range(seeds):
                    start = time.perf_counter()
                    out = da.sample(model, reward, sampler=sampler, num_samples=4000, nfe=nfe, steps=STEPS, seed=seed,
                                    progress=False, **options)
                    secs.append(time.perf_counter() - start)
                    means.append(out.samples[:, 0].double().mean().item())
                    log_z.append(out.info["log_z"])
                    reuse = out.info.get("prefix_reuse", 0.0)
                rmse = math.sqrt(sum((m - exact_mean) ** 2 for m in means) / seeds)
                lz = torch.tensor(log_z, dtype=torch.float64)
                errors[label] = rmse
                rows.append([f"{scale:g}", f"{nfe:,}", label, f"{rmse:.4f}", f"{sum(means) / seeds - exact_mean:+.4f}",
                             f"{lz.std().item():.4f}", f"{reuse:.2f}", f"{1e3 * sum(secs) / seeds:.0f}"])
                print(f"s={scale:g} nfe={nfe:,} {label:24s} RMSE {rmse:.4f}  log Z std {lz.std().item():.4f} "
                      f"(exact log Z {exact_log_z:.4f}, mean {lz.mean().item():.4f})  reuse {reuse:.2f}")
            result[f"rmse_ratio_s{scale:g}_{nfe}"] = f"{errors['dts'] / errors['sir']:.3f}"
    notes = (f"`python benchmarks/late_reward.py{' --quick' if args.quick else ''}`: {seeds} seeds per row, 4,000 "
             "output draws per run; RMSE and bias of the tilted mean of x[0] against the exact value; std over seeds "
             "of log Z-hat. Wall times: a 2-core machine shared with other jobs (ms per run, same run for all rows).")
    path = common.write_markdown("late_reward", "Tree vs SIR: reward decided early (s = 1) or late (s = 0.1)", rows,
                                 ["data std s", "NFE", "sampler", "RMSE of tilted mean", "bias", "std log Z-hat",
                                  "prefix reuse", "ms / run"], notes, args.quick)
    print(f"wrote {path}")
    common.result_line("late_reward", **result)


if __name__ == "__main__":
    main()
