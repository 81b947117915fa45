"""Reward guidance on the digits models: which scale and gradient clip work (a scale x clip table).

    python benchmarks/guidance_clip.py [--quick] [--models digits digits-flow]

Task: make unconditional samples a "3" with ``da.RewardGuidance(model, digit(target=3), scale=w,
max_grad_norm=c)`` (x0-hat gradients, guided over the whole trajectory), on the ancestral sampler
with the model's default kernel. For every scale w and clip c (``none`` = unclipped) it reports the
rate of 3s (classifier argmax), the mean reward log p(3 | x), and the share of model-space values
outside the data range [-1, 1] by more than 0.1 (``off-range``: what ``RewardGuidance`` warns about;
saturated noise has a large share). The unguided model (w = 0) is the first row of each model.
This table is where ``RewardGuidance``'s default clip comes from (README, "Choosing scale and clip").
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.evaluation import classify  # noqa: E402
from diffalign.guidance.reward_guidance import off_range_fraction  # noqa: E402

TARGET = 3


def evaluate(model, guided, n: int, steps: int, seed: int) -> tuple[float, float, float]:
    out = da.sample(guided, None, num_samples=n, steps=steps, seed=seed, progress=False)
    images = model.decode(out.samples)
    reward = da.rewards.get("digit", target=TARGET)(images)
    rate = (classify(images) == TARGET).float().mean().item()
    return rate, reward.mean().item(), off_range_fraction(out.samples, model.data_range)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=["digits", "digits-flow"])
    p.add_argument("--scales", type=float, nargs="*", default=None)
    p.add_argument("--clips", nargs="*", default=None, help="clip values, or 'none' for unclipped")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    common.setup(args)
    n, steps = (48, 20) if args.quick else (128, 30)
    scales = args.scales or ([1.0, 3.0, 10.0] if args.quick else [1.0, 3.0, 10.0, 30.0])
    clips = [None if c == "none" else float(c) for c in (args.clips or ["none", "10", "3", "1", "0.3"])]
    reward = da.rewards.get("digit", target=TARGET)

    rows, results = [], {}
    for name in args.models:
        model = da.load_model(name)
        base_rate, base_mean, base_off = evaluate(model, model, n, steps, args.seed)
        rows.append([name, "0", "-", f"{base_rate:.3f}", f"{base_mean:.3f}", f"{base_off:.3f}"])
        print(f"{name} unguided rate {base_rate:.3f} reward {base_mean:.3f} off-range {base_off:.3f}", flush=True)
        key = name.replace("-", "_")
        results[f"{key}_base_rate"] = f"{base_rate:.3f}"
        for w in scales:
            for clip in clips:
                guided = da.RewardGuidance(model, reward, scale=w, max_grad_norm=clip)
                rate, mean, off = evaluate(model, guided, n, steps, args.seed)
                label = "none" if clip is None else f"{clip:g}"
                rows.append([name, f"{w:g}", label, f"{rate:.3f}", f"{mean:.3f}", f"{off:.3f}"])
                print(f"{name} w={w:<4g} clip={label:5s} rate {rate:.3f} reward {mean:.3f} off-range {off:.3f}", flush=True)
                results[f"{key}_w{w:g}_clip{label}_rate"] = f"{rate:.3f}"

    notes = (
        f"`python benchmarks/guidance_clip.py{' --quick' if args.quick else ''}`: unconditional ancestral sampling "
        f"(each model's default kernel), {steps} steps, {n} samples per row, seed {args.seed}; "
        f"`RewardGuidance(model, digit(target={TARGET}), scale=w, max_grad_norm=clip)` over the whole trajectory; "
        f"rate = classifier argmax is {TARGET}; off-range = share of model-space values outside [-1.1, 1.1]."
    )
    path = common.write_markdown(
        "guidance_clip", "Reward guidance on digits: scale x gradient clip", rows,
        ["model", "w", "max_grad_norm", f"rate of {TARGET}s", "mean reward", "off-range"], notes, args.quick)
    print(f"wrote {path}")
    common.result_line("guidance_clip", **results)


if __name__ == "__main__":
    main()
