"""Search: DTS* vs best-of-N, best reward found versus NFE, on the embedded digits model.

    python benchmarks/search.py [--quick] [--seeds 3]

Reward: closeness to one fixed held-out digit, r(x) = -100 * mean((x - x_ref)^2) in [0, 1] pixels
(an inversion-style search task: a continuous reward with no easy maximiser that best-of-N improves on
only slowly, like ImageReward in the paper's Stable Diffusion experiment). Model: the unconditional
``digits`` UNet, 50 steps. Reported: mean best reward over seeds at each budget, and the NFE at which
DTS* first matches best-of-N's reward at the largest budget (log-linear interpolation).
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
from diffalign.datasets import load_digits_split  # noqa: E402

STEPS = 50


def match_reward(reference: torch.Tensor):
    def reward(images: torch.Tensor) -> torch.Tensor:
        return -100.0 * (images - reference.to(images)).square().flatten(1).mean(1)

    return reward


def cost_to_reach(budgets, values, seconds, target):
    """(NFE, seconds per run) at which the curve first reaches target, both log-interpolated between the
    two budgets that bracket it; None if never."""
    for i, v in enumerate(values):
        if v >= target:
            if i == 0:
                return budgets[0], seconds[0]
            frac = (target - values[i - 1]) / max(v - values[i - 1], 1e-12)

            def between(a, b):
                return math.exp(math.log(a) + frac * (math.log(b) - math.log(a)))

            return between(budgets[i - 1], budgets[i]), between(seconds[i - 1], seconds[i])
    return None


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=None)
    args = p.parse_args()
    common.setup(args)
    # --quick: one seed and budgets up to 1e4, so that it finishes within 2 minutes on 2 cores
    seeds = args.seeds or (1 if args.quick else 3)
    budgets = [1_000, 3_000, 10_000] if args.quick else [1_000, 3_000, 10_000, 30_000, 100_000]
    model = da.load_model("digits")
    test = load_digits_split("test")
    reference = test.images[(test.labels == 3).nonzero()[0, 0]]
    reward = match_reward(reference)

    curves, seconds = {}, {}
    for name in ("best-of-n", "dts-star"):
        values, secs = [], []
        for nfe in budgets:
            start = time.perf_counter()
            best = [da.sample(model, reward, sampler=name, num_samples=1, nfe=nfe, steps=STEPS, seed=s,
                              progress=False).rewards[0].item() for s in range(seeds)]
            secs.append((time.perf_counter() - start) / seeds)
            values.append(sum(best) / len(best))
            print(f"{name:9s} nfe={nfe:>7,d}: best reward {values[-1]:.3f} (seeds {[round(b, 3) for b in best]}, "
                  f"{secs[-1]:.1f}s/run)")
        curves[name], seconds[name] = values, secs
    star = da.samplers.get("dts-star")
    target = curves["best-of-n"][-1]
    reach = cost_to_reach(budgets, curves["dts-star"], seconds["dts-star"], target)
    rows = [[f"{b:,}", f"{curves['best-of-n'][i]:.3f}", f"{curves['dts-star'][i]:.3f}", f"{seconds['best-of-n'][i]:.1f}",
             f"{seconds['dts-star'][i]:.1f}"] for i, b in enumerate(budgets)]
    if reach:
        nfe_factor, time_factor = budgets[-1] / reach[0], seconds["best-of-n"][-1] / reach[1]
        reach_text = (f"{reach[0]:,.0f} NFE and {reach[1]:.1f} s per run: {nfe_factor:.1f}x fewer NFE and "
                      f"{time_factor:.1f}x less wall time than best-of-N's {seconds['best-of-n'][-1]:.1f} s")
    else:
        reach_text = f"no budget up to {budgets[-1]:,} NFE"
    notes = (f"`python benchmarks/search.py{' --quick' if args.quick else ''}`: mean over {seeds} seeds of the best reward "
             f"found, one output sample per run. DTS* at its defaults (lambda = inf max backup, UCT c_uct={star.c_uct:g}, "
             f"c_pw={star.c_pw:g}, alpha={star.alpha:g}; tuned on a different reference digit, class 7). "
             f"{star.leaves_per_iteration} rollouts in flight (continuous batching). "
             f"DTS* reaches best-of-N's {budgets[-1]:,}-NFE reward ({target:.3f}) at {reach_text} "
             "(log-interpolated between budgets). Wall time: seconds per run on this machine, alone.")
    path = common.write_markdown("search", "Search: best reward found vs NFE (digits, match-a-digit reward)", rows,
                                 ["NFE", "best-of-N", "DTS*", "best-of-N s / run", "DTS* s / run"], notes, args.quick)
    _plot(budgets, curves, path.with_suffix(".png"))
    print(f"wrote {path}")
    common.result_line("search", bon_best=f"{target:.3f}", dts_star_nfe_to_match=f"{reach[0]:.0f}" if reach else "none",
                       wall_time_advantage=f"{time_factor:.1f}" if reach else "none")


def _short_count(x: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= size:
            return f"{x / size:g}{suffix}"
    return f"{x:g}"


def _plot(budgets, curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, values in curves.items():
        ax.plot(budgets, values, marker="o", label=name)
    ax.set_xscale("log")
    # one label per budget, written 2k / 20k: a log axis spanning about a decade labels its minor ticks
    # too (2x10^3, 3x10^3, ...), and those ran into each other
    ax.set_xticks(budgets)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: _short_count(x)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("NFE")
    ax.set_ylabel("best reward found")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig


if __name__ == "__main__":
    main()
