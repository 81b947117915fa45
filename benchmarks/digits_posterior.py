"""Class posterior on the embedded digits model: sample p(x | c) from p(x) exp(log p(c | x)).

    python benchmarks/digits_posterior.py [--quick] [--classes 0 1 ...] [--budgets 1000 10000 100000]

The DTS paper's MNIST task (Jain et al. 2025, §5.2): the *unconditional* ``digits`` model, reward
r(x) = log p(c | x) from the embedded classifier and lambda = 1, so the target p(x) p(c | x) is the
class-conditional distribution p(x | c). For each class and budget, each sampler returns 200 samples
(drawn from the pool / particles / tree that the budget paid for), scored by:

* FID against the held-out real digits of class c (torchmetrics FID with the classifier's features;
  only ~36 held-out images per class, so absolute values are noisy -- compare methods, not numbers);
* mean log p(c | x);
* diversity: mean pairwise L2 distance between samples in [0, 1] pixel space.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.datasets import load_digits_split  # noqa: E402
from diffalign.evaluation import fid  # noqa: E402

STEPS = 50
NUM_OUT = 200
SAMPLERS = {"sir": {}, "smc": {}, "dts": {}}
# DPS (Chung et al. 2023): x0-hat reward-gradient guidance on the ancestral sampler, the DTS paper's
# Table 1 baseline. Its cost is fixed: NUM_OUT rollouts x STEPS x (forward + backward).
DPS = "dps"
DPS_NFE = NUM_OUT * STEPS * 2
DPS_CLIP = 1.0


def diversity(images: torch.Tensor) -> float:
    flat = images.flatten(1).double()
    d = torch.cdist(flat, flat)
    n = len(flat)
    return float(d.sum() / (n * (n - 1)))


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, nargs="*", default=None)
    p.add_argument("--budgets", type=int, nargs="*", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    common.setup(args)
    classes = args.classes if args.classes is not None else ([3, 8] if args.quick else list(range(10)))
    budgets = args.budgets or ([1_000, 10_000] if args.quick else [1_000, 10_000, 100_000])
    model = da.load_model("digits")
    test = load_digits_split("test")

    table = {}
    for c in classes:
        reference = test.images[test.labels == c]
        reward = da.rewards.get("digit", target=c)
        for name, options in SAMPLERS.items():
            for nfe in budgets:
                start = time.perf_counter()
                out = da.sample(model, reward, sampler=name, num_samples=NUM_OUT, nfe=nfe, steps=STEPS, seed=args.seed,
                                lam=1.0, **options)
                images = model.decode(out.samples)
                row = (fid(images, reference), out.rewards.float().mean().item(), diversity(images),
                       time.perf_counter() - start)
                table[(c, name, nfe)] = row
                print(f"class {c} {name:4s} nfe={nfe:>7,d}: FID {row[0]:7.2f}  log p(c|x) {row[1]:7.3f}  "
                      f"diversity {row[2]:.3f}  ({row[3]:.0f}s)")
        start = time.perf_counter()
        # lambda = 1: the same target p(x) p(c | x). Unclipped, x0-hat gradients through this eps-model blow
        # up near t = 1 (x0_hat = (x - sigma eps) / alpha with alpha ~ 0.006; benchmarks/guidance.py), so the
        # per-sample gradient norm is clipped to 1, as DPS normalises its step
        guided = da.RewardGuidance(model, reward, scale=1.0, max_grad_norm=DPS_CLIP)
        out = da.sample(guided, reward, sampler="ancestral", num_samples=NUM_OUT, steps=STEPS, seed=args.seed)
        images = model.decode(out.samples)
        table[(c, DPS, out.nfe)] = (fid(images, reference), out.rewards.float().mean().item(), diversity(images),
                                    time.perf_counter() - start)
        print(f"class {c} dps  nfe={out.nfe:>7,d}: FID {table[(c, DPS, out.nfe)][0]:7.2f}")

    rows, means = [], {}
    for name in [*SAMPLERS, DPS]:
        for nfe in (budgets if name != DPS else [DPS_NFE]):
            cells = [table[(c, name, nfe)] for c in classes]
            mean = [sum(x[i] for x in cells) / len(cells) for i in range(4)]
            means[(name, nfe)] = mean
            rows.append([name, f"{nfe:,}", f"{mean[0]:.2f}", f"{mean[1]:.3f}", f"{mean[2]:.3f}", f"{mean[3]:.0f}"])
    per_class = [[c, name, f"{nfe:,}", f"{v[0]:.2f}", f"{v[1]:.3f}", f"{v[2]:.3f}"] for (c, name, nfe), v in table.items()]
    notes = (f"`python benchmarks/digits_posterior.py{' --quick' if args.quick else ''}`: classes {classes}, {STEPS} steps, "
             f"lambda = 1, {NUM_OUT} output samples, seed {args.seed}; means over classes (per-class rows below). "
             "Samplers at their defaults (DTS: c_pw=4, alpha=0.9, branch every 10 steps, 16 leaves per iteration; "
             "SMC: diff potential, resampling every 10 steps when ESS < K/2). "
             f"DPS: `RewardGuidance(model, reward, scale=1, max_grad_norm={DPS_CLIP:g})` on the ancestral sampler, {DPS_NFE:,} NFE "
             "(forward + backward = 2 per sample and step; its cost is fixed by samples x steps).")
    path = common.write_markdown("digits_posterior", "Digits class posterior p(x | c) from the unconditional model", rows,
                                 ["sampler", "NFE", "FID (mean over classes)", "log p(c \\| x)", "diversity", "s / class"],
                                 notes, args.quick)
    with path.open("a") as f:
        f.write("\n## Per class\n\n| class | sampler | NFE | FID | log p(c \\| x) | diversity |\n|---|---|---|---|---|---|\n")
        f.writelines("| " + " | ".join(str(x) for x in r) + " |\n" for r in per_class)
    print(f"wrote {path}")
    common.result_line("digits_posterior", **{f"{n}_fid_{b}": f"{means[(n, b)][0]:.2f}" for n in SAMPLERS for b in budgets},
                       **{f"dps_fid_{DPS_NFE}": f"{means[(DPS, DPS_NFE)][0]:.2f}"})


if __name__ == "__main__":
    main()
