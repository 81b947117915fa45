"""Class posteriors on the embedded digits model: SIR, SMC, DTS (exact and paper) and DPS, several seeds.

    python benchmarks/digits_posterior.py [--quick] [--classes 3] [--budgets 10000] [--seeds 3]

Defaults fit the 15-minute slot of a shared, heavily loaded 2-core machine: class 3 and the even-digit
task at 3,000 NFE, 3 seeds each; pass more classes or budgets (--budgets 10000 100000) on a free machine.

Two tasks on the *unconditional* ``digits`` model (50 steps, lambda = 1), after the DTS paper's MNIST
experiments (Jain et al. 2025, §5.2):

1. **Class posterior**: r(x) = log p(c | x) from the embedded classifier, so the target p(x) p(c | x) is
   p(x | c). Per class, budget and seed, each sampler returns 200 samples (resampled from what the
   budget paid for), scored by FID against the ~36 held-out real digits of class c (torchmetrics FID
   on the classifier's features: noisy in absolute terms, compare methods), mean log p(c | x), and
   diversity (mean pairwise L2 in [0, 1] pixels). Also the spread over seeds of log Z-hat, the
   sampler's estimate of log E_p[exp(r)] (SIR and DTS only; both are unbiased for Z, so a smaller spread
   is a better estimator of the same quantity).
2. **Multimodal even digits**: r(x) = max over c in S = {0, 2, 4, 6, 8} of log p(c | x). The target
   p(x) max_S p(c | x) puts on each even class (nearly) its base frequency, renormalised over S. The
   exact class weights come from a pool of base samples, importance-weighted by exp(r) (and the base
   class frequencies are reported alongside). Metric: total variation between the class histogram of
   the output (classifier argmax) and these weights; also the mass the output puts on odd classes.

DPS: x0-hat reward-gradient guidance (``da.RewardGuidance``, Chung et al. 2023) on the ancestral
sampler, with the gradient norm clipped to 1; as many samples as the largest budget buys at
2 NFE (forward + backward) per sample and step (100 samples at 10,000 NFE).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.datasets import load_digits_split  # noqa: E402
from diffalign.evaluation import fid  # noqa: E402

STEPS = 50
NUM_OUT = 200
DPS_CLIP = 1.0
EVEN = (0, 2, 4, 6, 8)
# label -> (registry name, options)
SAMPLERS = {
    "sir": ("sir", {}),
    "smc": ("smc", {}),
    "dts": ("dts", {}),
    "dts (paper preset)": ("dts", {"preset": "paper"}),
}
DPS = "dps"


class SetReward(torch.nn.Module):
    """max over classes c in S of log p(c | x): high for any digit of the set."""

    differentiable = True

    def __init__(self, classes):
        super().__init__()
        self.classifier = da.rewards.get("digit", target=0).classifier
        self.classes = list(classes)

    def log_probs(self, images):
        weight = self.classifier.head.weight
        return F.log_softmax(self.classifier(images.to(device=weight.device, dtype=weight.dtype)), -1)

    def forward(self, images):
        return self.log_probs(images)[:, self.classes].amax(1).to(images.device)


def diversity(images: torch.Tensor) -> float:
    flat = images.flatten(1).double()
    d = torch.cdist(flat, flat)
    n = len(flat)
    return float(d.sum() / (n * (n - 1)))


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / max(1, len(values) - 1))
    return m, s


def fmt(values, digits=2):
    m, s = mean_std(values)
    return "-" if m is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def run(model, reward, name, options, nfe, seed, dps_samples=100):
    start = time.perf_counter()
    if name == DPS:
        guided = da.RewardGuidance(model, reward, scale=1.0, max_grad_norm=DPS_CLIP)
        out = da.sample(guided, reward, sampler="ancestral", num_samples=dps_samples, steps=STEPS, seed=seed,
                        progress=False)
    else:
        sampler, opts = options
        out = da.sample(model, reward, sampler=sampler, num_samples=NUM_OUT, nfe=nfe, steps=STEPS, seed=seed, lam=1.0,
                        progress=False, **opts)
    return out, time.perf_counter() - start


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, nargs="*", default=None)
    p.add_argument("--budgets", type=int, nargs="*", default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--pool", type=int, default=None, help="base samples for the even-digit task's exact weights")
    args = p.parse_args()
    common.setup(args)
    classes = args.classes if args.classes is not None else [3]
    budgets = args.budgets or ([1_000] if args.quick else [3_000])
    seeds = args.seeds or (2 if args.quick else 3)
    pool_size = args.pool or (200 if args.quick else 400)
    model = da.load_model("digits")
    test = load_digits_split("test")
    labels = [*SAMPLERS, DPS]
    # DPS spends forward + backward per sample and step: as many samples as the largest budget buys
    dps_samples = max(1, budgets[-1] // (2 * STEPS))
    dps_nfe = dps_samples * STEPS * 2

    # -- task 1: class posterior -----------------------------------------------------------------------
    table = {}
    for c in classes:
        reference = test.images[test.labels == c]
        reward = da.rewards.get("digit", target=c)
        for label in labels:
            for nfe in (budgets if label != DPS else [dps_nfe]):
                cells = []
                for seed in range(seeds):
                    out, secs = run(model, reward, label, SAMPLERS.get(label), nfe, seed, dps_samples)
                    images = model.decode(out.samples)
                    lz = out.info.get("log_z")
                    cells.append((fid(images, reference), out.rewards.float().mean().item(), diversity(images), secs,
                                  lz, out.info.get("prefix_reuse")))
                    print(f"class {c} {label:20s} nfe={out.nfe:>7,d} seed {seed}: FID {cells[-1][0]:7.2f}  "
                          f"log p(c|x) {cells[-1][1]:7.3f}  diversity {cells[-1][2]:.3f}  ({secs:.0f}s)")
                table[(c, label, nfe)] = cells

    rows = []
    for label in labels:
        for nfe in (budgets if label != DPS else [dps_nfe]):
            cells = [cell for c in classes for cell in table[(c, label, nfe)]]
            per_class_lz = [mean_std([cell[4] for cell in table[(c, label, nfe)]])[1] for c in classes]
            lz_spread = None if per_class_lz[0] is None else sum(per_class_lz) / len(per_class_lz)
            reuse = cells[0][5]
            rows.append([label, f"{nfe:,}", fmt([x[0] for x in cells]), fmt([x[1] for x in cells], 3),
                         fmt([x[2] for x in cells], 3), f"{lz_spread:.3f}" if lz_spread is not None else "-",
                         f"{reuse:.2f}" if reuse is not None else "-", f"{sum(x[3] for x in cells) / len(cells):.0f}"])

    # -- task 2: even digits, per-class balance ----------------------------------------------------------
    set_reward = SetReward(EVEN)
    start = time.perf_counter()
    base = da.sample(model, None, num_samples=pool_size, steps=STEPS, seed=10_000, batch_size=512, progress=False)
    with torch.no_grad():
        base_images = model.decode(base.samples)
        base_classes = set_reward.log_probs(base_images).argmax(1)
        weights = torch.softmax(set_reward(base_images).double(), 0)
    exact = torch.zeros(10, dtype=torch.float64).index_add_(0, base_classes, weights)
    freq = torch.bincount(base_classes, minlength=10).double() / pool_size
    print(f"even task: pool of {pool_size} base samples in {time.perf_counter() - start:.0f}s; exact class weights "
          f"{[round(w, 3) for w in exact.tolist()]}; base frequencies {[round(w, 3) for w in freq.tolist()]}")
    even_rows, balance = [], {}
    for label in labels:
        for nfe in (budgets if label != DPS else [dps_nfe]):
            tvs, odd, hist, secs_all = [], [], torch.zeros(10, dtype=torch.float64), []
            for seed in range(seeds):
                out, secs = run(model, set_reward, label, SAMPLERS.get(label), nfe, seed, dps_samples)
                with torch.no_grad():
                    got = set_reward.log_probs(model.decode(out.samples)).argmax(1)
                h = torch.bincount(got.cpu(), minlength=10).double() / len(got)
                tvs.append(0.5 * float((h - exact).abs().sum()))
                odd.append(float(h[[1, 3, 5, 7, 9]].sum()))
                hist += h / seeds
                secs_all.append(secs)
                print(f"even {label:20s} nfe={out.nfe:>7,d} seed {seed}: class TV {tvs[-1]:.3f}, odd mass {odd[-1]:.3f}")
            balance[(label, nfe)] = hist
            even_rows.append([label, f"{nfe:,}", fmt(tvs, 3), fmt(odd, 3),
                              " / ".join(f"{hist[c]:.2f}" for c in EVEN), f"{sum(secs_all) / len(secs_all):.0f}"])
    even_rows.append(["exact (pool)", "-", "0", f"{float(exact[[1, 3, 5, 7, 9]].sum()):.3f}",
                      " / ".join(f"{exact[c]:.2f}" for c in EVEN), "-"])
    even_rows.append(["base frequencies", "-", "-", "-", " / ".join(f"{freq[c]:.2f}" for c in EVEN), "-"])

    notes = (f"`python benchmarks/digits_posterior.py{' --quick' if args.quick else ''}`: classes {classes}, budgets "
             f"{budgets}, {seeds} seeds per class (mean ± std over classes x seeds), {STEPS} steps, lambda = 1, "
             f"{NUM_OUT} output samples per run. Samplers at their defaults (dts: exact tree, one branching level 10 "
             "steps above x0, 2 children; paper preset: c_pw=2, alpha=0.8, branch every 10 steps, descent output; "
             "SMC: diff potential, resampling every 10 steps when ESS < K/2). "
             f"DPS: `RewardGuidance(model, reward, scale=1, max_grad_norm={DPS_CLIP:g})` on ancestral, {dps_samples} "
             "samples, so that its fixed cost (samples x steps x 2) equals the largest budget. `log Z-hat spread`: std over seeds of the log "
             "normalising-constant estimate, averaged over classes (SIR and exact DTS, both unbiased for Z). "
             "Wall times: a 2-core machine shared with other jobs. The budgets are sized so that the full run "
             "fits 15 minutes on that machine.")
    path = common.write_markdown("digits_posterior", "Digits class posterior p(x | c) from the unconditional model", rows,
                                 ["sampler", "NFE", "FID", "log p(c \\| x)", "diversity", "log Z-hat spread",
                                  "prefix reuse", "s / run"], notes, args.quick)
    with path.open("a") as f:
        f.write(f"\n## Multimodal: even digits, r = max over c in {{0,2,4,6,8}} of log p(c | x)\n\n"
                f"Exact class weights from {pool_size:,} base samples weighted by exp(r) (the target p(x) max_S p(c|x)); "
                f"class TV and odd mass: mean ± std over {seeds} seeds; class shares averaged over seeds.\n\n"
                "| sampler | NFE | class TV vs exact | odd-class mass | shares 0 / 2 / 4 / 6 / 8 | s / run |\n"
                "|---|---|---|---|---|---|\n")
        f.writelines("| " + " | ".join(str(x) for x in r) + " |\n" for r in even_rows)
        f.write("\n## Per class\n\n| class | sampler | NFE | FID | log p(c \\| x) | diversity |\n|---|---|---|---|---|---|\n")
        for (c, label, nfe), cells in table.items():
            f.write(f"| {c} | {label} | {nfe:,} | {fmt([x[0] for x in cells])} | {fmt([x[1] for x in cells], 3)} | "
                    f"{fmt([x[2] for x in cells], 3)} |\n")
    print(f"wrote {path}")
    top = budgets[-1]
    result = {}
    for r in rows:
        if r[1] == f"{top:,}":
            result[f"{r[0].split(' ')[0] if 'paper' not in r[0] else 'paper'}_fid"] = r[2].split(" ")[0]
    for r in even_rows[:-2]:
        result[f"{r[0].split(' ')[0] if 'paper' not in r[0] else 'paper'}_even_tv"] = r[2].split(" ")[0]
    common.result_line("digits_posterior", **result)


if __name__ == "__main__":
    main()
