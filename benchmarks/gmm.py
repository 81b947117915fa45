"""DTS (exact and paper) vs SIR vs SMC on the 2-D Gaussian-mixture task of the DTS paper, against an exact ground truth.

    python benchmarks/gmm.py [--quick] [--seeds 5] [--pool 500000] [--budgets 1000 10000 100000]

Setup (Jain et al. 2025, §5.1): 8 equal modes on a circle of radius 4 with std 0.3; the *exact*
denoiser of that mixture (``diffalign.oracles``) under a VP schedule with beta linear 1e-3 -> 0.07
over 100 steps, sampled with 100 DDPM steps; reward r(x) = log sum_i w_i N(x; mu_i, 0.3^2 I) with
w_i proportional to exp(1.5 i); lambda = 1.

Ground truth: the target is the *chain's* output distribution tilted by exp(r). It is computed by
importance weights over a large pool of base-chain samples (2-D makes millions cheap), giving exact
mode weights (up to Monte-Carlo error far below the reported distances) and a reference sample.

Metrics, for each sampler, budget and seed: total-variation distance between mode occupancies
(nearest mode) of 10,000 output samples and the truth, and MMD (RBF kernel, bandwidth 1) of 2,000 of
them against 2,000 reference samples. Reported: mean and std over seeds. (Output samples cost no model
evaluations -- they are resampled from the pool, particles or tree that the budget paid for -- so many
are drawn to keep the metric's own sampling noise small: with 1,000 samples the TV of even a perfect
sampler would be ~0.015.)
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.oracles import GaussianMixture, gmm_denoiser  # noqa: E402

STEPS = 100
LAMBDA = 1.0
NUM_OUT = 10_000  # drawing outputs costs no NFE; many of them keep the TV estimate's own noise ~0.005
NUM_MMD = 2000
NUM_REF = 2000
# label -> (registry name, options, largest budget run). The paper's algorithm keeps per-node Python
# bookkeeping, so its rows stop at 1e5 NFE to keep the full run within 15 minutes on 2 cores.
SAMPLERS = {
    "sir": ("sir", {}, None),
    "smc": ("smc", {"resample_every": 20}, None),
    "dts": ("dts", {}, None),
    "dts (allocation=value)": ("dts", {"allocation": "value"}, None),
    "dts (paper preset, branch every 20)": ("dts", {"preset": "paper", "branch_every": 20}, 100_000),
    "dts (paper preset, output=reweight)": ("dts", {"preset": "paper", "branch_every": 20, "output": "reweight"}, 10_000),
}


def problem():
    angles = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
    means = 4.0 * torch.stack([angles.cos(), angles.sin()], 1)
    data = GaussianMixture(means, 0.3)
    reward_mixture = GaussianMixture(means, 0.3, weights=torch.exp(1.5 * torch.arange(8, dtype=torch.float64)))
    schedule = da.VPSchedule.linear(1e-3, 0.07, 100)
    model = gmm_denoiser(data, schedule)

    def reward(x):
        return reward_mixture.log_prob(x)

    return model, reward, means


def modes(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x.double(), means).argmin(1)


def ground_truth(model, reward, means, pool: int, seed: int = 12345):
    """Exact (to MC error) mode weights of the tilted chain, plus a reference sample."""
    out = da.sample(model, None, num_samples=pool, steps=STEPS, seed=seed, batch_size=pool // 10)
    x = out.samples.double()
    log_w = LAMBDA * reward(x)
    w = torch.softmax(log_w, 0)
    weights = torch.zeros(len(means), dtype=torch.float64).index_add_(0, modes(x, means), w)
    g = torch.Generator().manual_seed(seed)
    reference = x[torch.multinomial(w.float(), NUM_REF, replacement=True, generator=g)]
    ess = float(1 / (w * w).sum())
    return weights, reference, ess


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float = 1.0) -> float:
    """Unbiased MMD^2 with an RBF kernel, reported as sqrt(max(MMD^2, 0))."""
    x, y = x.double(), y.double()

    def k(a, b):
        return torch.exp(-torch.cdist(a, b).square() / (2 * bandwidth**2))

    n, m = len(x), len(y)
    kxx = (k(x, x).sum() - n) / (n * (n - 1))
    kyy = (k(y, y).sum() - m) / (m * (m - 1))
    return math.sqrt(max(float(kxx + kyy - 2 * k(x, y).mean()), 0.0))


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None, help="seeds per setting (default 5; 3 with --quick)")
    p.add_argument("--pool", type=int, default=None, help="base samples for the ground truth")
    p.add_argument("--budgets", type=int, nargs="*", default=None, help="NFE budgets (default 1e3 1e4 1e5)")
    args = p.parse_args()
    common.setup(args)
    seeds = args.seeds or (3 if args.quick else 5)
    # Sized for a 15-minute slot on a shared 2-core machine: the ground-truth pool costs 100 model calls per
    # base sample (~15 s per 20k on one busy core), so the full run stops at 1e5 NFE with a 200k pool (its
    # own TV noise ~0.005, below the 1e5 errors); pass --pool 2000000 --budgets ... on a free machine.
    budgets = args.budgets or [1_000, 10_000, 100_000]
    pool = args.pool or (50_000 if args.quick else 200_000)

    model, reward, means = problem()
    start = time.perf_counter()
    truth, reference, ess = ground_truth(model, reward, means, pool)
    print(f"ground truth from {pool} base samples (ESS {ess:.0f}) in {time.perf_counter() - start:.0f}s: "
          f"mode weights {[round(w, 4) for w in truth.tolist()]}")

    results = {}
    for name, (sampler, options, largest) in SAMPLERS.items():
        for nfe in budgets:
            if largest is not None and nfe > (10_000 if args.quick else largest):
                continue
            tvs, mmds, secs, reuse = [], [], [], 0.0
            for seed in range(seeds):
                t0 = time.perf_counter()
                out = da.sample(model, reward, sampler=sampler, num_samples=NUM_OUT, nfe=nfe, steps=STEPS, seed=seed,
                                lam=LAMBDA, **options)
                secs.append(time.perf_counter() - t0)
                reuse = out.info.get("prefix_reuse", 0.0)
                assert out.nfe <= nfe
                occupancy = torch.bincount(modes(out.samples, means), minlength=len(means)).double() / NUM_OUT
                tvs.append(0.5 * float((occupancy - truth).abs().sum()))
                mmds.append(mmd(out.samples[:NUM_MMD], reference))
            results[(name, nfe)] = (tvs, mmds, secs, reuse)
            print(f"{name:30s} nfe={nfe:>9,d}  TV {_mean(tvs):.4f} ± {_std(tvs):.4f}  MMD {_mean(mmds):.4f} ± "
                  f"{_std(mmds):.4f}  ({_mean(secs):.1f}s/run, prefix reuse {reuse:.2f})")

    rows = [[name, f"{nfe:,}", f"{_mean(tv):.4f} ± {_std(tv):.4f}", f"{_mean(mm):.4f} ± {_std(mm):.4f}", f"{_mean(s):.1f}",
             f"{reuse:.2f}"] for (name, nfe), (tv, mm, s, reuse) in results.items()]
    notes = (f"`python benchmarks/gmm.py{' --quick' if args.quick else ''}`: {seeds} seeds (mean ± std over seeds), "
             f"{NUM_OUT} output samples per run ({NUM_MMD} for MMD), ground truth from {pool:,} base-chain samples "
             f"(importance ESS {ess:,.0f}). True mode weights: {', '.join(f'{w:.4f}' for w in truth.tolist())}. "
             f"Sampler options: {json.dumps({k: v[1] for k, v in SAMPLERS.items()})}, otherwise defaults (dts: exact "
             "tree, one branching level 20 steps above x0, 2 children per node; paper preset: c_pw=2, alpha=0.8, "
             "descent output). The paper preset's rows stop at 1e5 NFE (reweight: 1e4; both 1e4 with --quick), for run time. Wall times: a 2-core machine "
             "shared with other jobs.")
    path = common.write_markdown("gmm", "2-D GMM: distance to the exact tilted target", rows,
                                 ["sampler", "NFE", "mode TV (mean ± std)", "MMD (mean ± std)", "s / run", "prefix reuse"], notes, args.quick)
    _plot(results, budgets, path.with_suffix(".png"))
    print(f"wrote {path}")
    top = max(budgets[:3])
    common.result_line("gmm", **{f"{n}_tv_{top}": f"{_mean(results[(n, top)][0]):.4f}" for n in ("sir", "smc", "dts")},
                       dts_prefix_reuse=f"{results[('dts', top)][3]:.2f}")


def _plot(results, budgets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in SAMPLERS:
        ran = [b for b in budgets if (name, b) in results]
        for ax, index, label in ((axes[0], 0, "mode TV"), (axes[1], 1, "MMD")):
            ys = [_mean(results[(name, b)][index]) for b in ran]
            es = [_std(results[(name, b)][index]) for b in ran]
            ax.errorbar(ran, ys, yerr=es, marker="o", capsize=3, label=name)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("NFE")
            ax.set_ylabel(label)
    axes[0].legend()
    fig.suptitle("2-D GMM, exact denoiser: distance to p(x) exp(r(x))")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _mean(v):
    return sum(v) / len(v)


def _std(v):
    m = _mean(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / max(1, len(v) - 1))


if __name__ == "__main__":
    main()
