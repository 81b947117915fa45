"""Quality of the embedded models, measured on held-out real digits.

    python benchmarks/embedded_quality.py [--quick]

* classifier accuracy on the held-out split (bar: >= 97%);
* class accuracy of CFG samples: the fraction of samples drawn for class c that the classifier labels
  c (bar: >= 90%), with CFG scale 3;
* the few-step `digits-fast` at 1, 2 and 4 Euler steps (its CFG is distilled in: no CFG wrapper);
* unconditional FID against the held-out split, in the classifier's feature space (torchmetrics FID
  with ``feature=`` the classifier), beside the real-vs-real floor: training images vs held-out images
  with the same sample sizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.datasets import load_digits_split  # noqa: E402
from diffalign.evaluation import class_accuracy, classify, fid  # noqa: E402

CFG = 3.0
FAST_STEPS = (1, 2, 4)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    common.setup(args)
    per_class, n_fid = (20, 360) if args.quick else (100, 1000)
    train, test = load_digits_split("train"), load_digits_split("test")

    clf_acc = class_accuracy(test.images, test.labels)
    g = torch.Generator().manual_seed(0)
    floor = fid(train.images[torch.randperm(len(train.labels), generator=g)[:n_fid]], test.images)
    rows = [["classifier", "-", f"{clf_acc:.3f}", "-", f"{floor:.2f} (train vs held-out)"]]
    results = {"classifier_acc": f"{clf_acc:.3f}", "fid_floor": f"{floor:.2f}"}
    for name in ("digits", "digits-flow"):
        model = da.load_model(name)
        labels = torch.arange(10).repeat_interleave(per_class)
        cond_out = da.sample(da.CFGDenoiser(model, CFG), None, num_samples=len(labels), steps=args.steps, seed=0,
                             cond=labels, progress=True)
        acc = (classify(model.decode(cond_out.samples)) == labels).float().mean().item()
        uncond = da.sample(model, None, num_samples=n_fid, steps=args.steps, seed=1, progress=True)
        score = fid(model.decode(uncond.samples), test.images)
        rows.append([name, f"{len(labels)}", "-", f"{acc:.3f}", f"{score:.2f}"])
        key = name.replace("-", "_")
        results[f"{key}_cfg_acc"] = f"{acc:.3f}"
        results[f"{key}_fid"] = f"{score:.2f}"
        print(f"{name}: CFG class accuracy {acc:.3f}, FID {score:.2f} (floor {floor:.2f})")
    # digits-fast: digits-flow distilled by reflow with CFG 3 built in (one pass per step, no CFG wrapper),
    # sampled by the deterministic Euler ODE in a few steps
    model = da.load_model("digits-fast")
    for steps in FAST_STEPS:
        labels = torch.arange(10).repeat_interleave(per_class)
        cond_out = da.sample(model, None, kernel="euler", num_samples=len(labels), steps=steps, seed=0, cond=labels)
        acc = (classify(model.decode(cond_out.samples)) == labels).float().mean().item()
        uncond = da.sample(model, None, kernel="euler", num_samples=n_fid, steps=steps, seed=1)
        score = fid(model.decode(uncond.samples), test.images)
        rows.append([f"digits-fast, {steps} step{'s' if steps > 1 else ''}", f"{len(labels)}", "-", f"{acc:.3f}", f"{score:.2f}"])
        results[f"digits_fast_{steps}_cfg_acc"] = f"{acc:.3f}"
        results[f"digits_fast_{steps}_fid"] = f"{score:.2f}"
        print(f"digits-fast ({steps} steps): class accuracy {acc:.3f}, FID {score:.2f}")
    path = common.write_markdown(
        "embedded_quality", "Embedded model quality (held-out digits)", rows,
        ["model", "CFG samples", "classifier accuracy", f"CFG {CFG:g} class accuracy", f"FID ({n_fid} samples)"],
        f"`python benchmarks/embedded_quality.py{' --quick' if args.quick else ''}`: {args.steps} steps, default "
        f"stochastic kernel (DDPM for `digits`, flow SDE for `digits-flow`); `digits-fast` (reflow-distilled "
        f"`digits-flow` with CFG 3 built in, one pass per step) with the Euler ODE at {', '.join(map(str, FAST_STEPS))} "
        f"steps; {per_class} CFG samples per class; FID "
        f"with the embedded classifier's 64-d features against the {len(test.labels)} held-out digits.",
        args.quick,
    )
    print(f"wrote {path}")
    common.result_line("embedded_quality", **results)


if __name__ == "__main__":
    main()
