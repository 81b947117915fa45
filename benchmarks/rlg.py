"""RLG on digits: reward, FID and target-class rate versus the guidance weight w.

    python benchmarks/rlg.py [--quick] [--lora DIR] [--weights 0 0.5 1 1.5 2 3]

RLG (arXiv:2508.21016) mixes a base model and an RL-tuned one, ``(1 - w) base + w tuned``, in one
sampler: w = 0 is the base, w = 1 the tuned model, w > 1 extrapolates. Here the base is the embedded
``digits-flow`` model, sampled unconditionally, and the tuned model is a GRPO LoRA for the reward
log p(3 | x): ``--lora DIR`` (e.g. ``runs/grpo/final`` from ``diffalign train configs/grpo_digits.yaml``),
or, when no directory is given, a short GRPO fine-tune from that preset made by this script (its step
count is in the results note). One network holds both: the base pass switches the LoRA off.
Unconditional sampling uses no CFG, so each step costs 2 NFE per sample (1 at w = 0 or 1).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.datasets import load_digits_split  # noqa: E402
from diffalign.evaluation import classify, fid  # noqa: E402
from diffalign.trainers import get_trainer, load_config  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TARGET = 3


def short_grpo(workdir: Path, steps: int) -> tuple[Path, str]:
    config = load_config(CONFIGS / "grpo_digits.yaml",
                         [f"train.max_steps={steps}", "train.report_to=none", "train.checkpoint_every=0"])
    start = time.perf_counter()
    get_trainer("grpo")(config, workdir / "grpo").train()
    note = (f"tuned model: a short GRPO fine-tune made by this script (configs/grpo_digits.yaml, {steps} steps, "
            f"{time.perf_counter() - start:.0f} s), not a full run")
    return workdir / "grpo" / "final", note


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--lora", default=None, help="a trained GRPO LoRA directory (default: a short fine-tune made here)")
    p.add_argument("--weights", type=float, nargs="*", default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    p.add_argument("--train-steps", type=int, default=None, help="steps of the short fine-tune (default 60; --quick 15)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    common.setup(args)
    n, steps = (128, 20) if args.quick else (512, 50)
    test = load_digits_split("test")
    real_target, real_all = test.images[test.labels == TARGET], test.images
    reward = da.rewards.get("digit", target=TARGET)

    rows, results = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        if args.lora:
            lora, note = Path(args.lora), f"tuned model: the LoRA in {args.lora}"
        else:
            lora, note = short_grpo(Path(workdir), args.train_steps or (15 if args.quick else 60))
        tuned = da.load_model("digits-flow", lora=lora)
        for w in args.weights:
            model = da.RLGDenoiser(tuned, tuned, weight=w)
            out = da.sample(model, None, num_samples=n, steps=steps, seed=args.seed, progress=False)
            images = tuned.decode(out.samples)
            rate = (classify(images) == TARGET).float().mean().item()
            mean = reward(images).mean().item()
            fid_target, fid_all = fid(images, real_target), fid(images, real_all)
            rows.append([f"{w:g}", f"{rate:.3f}", f"{mean:.3f}", f"{fid_target:.2f}", f"{fid_all:.2f}", f"{out.nfe:,}"])
            results[f"rate_w{w:g}"] = f"{rate:.3f}"
            results[f"reward_w{w:g}"] = f"{mean:.3f}"
            print(f"w={w:<4g} rate {rate:.3f} reward {mean:.3f} FID(3s) {fid_target:.2f} FID(all) {fid_all:.2f} NFE {out.nfe:,}",
                  flush=True)

    notes = (
        f"`python benchmarks/rlg.py{' --quick' if args.quick else ''}`: digits-flow, unconditional, default flow-SDE "
        f"kernel, {steps} steps, {n} samples per row, seed {args.seed}; {note}. Rate: classifier argmax = {TARGET}; "
        f"reward log p({TARGET} | x); FID in classifier features against the {len(real_target)} held-out real {TARGET}s "
        f"and against all {len(real_all)} held-out digits (distance from the data distribution)."
    )
    path = common.write_markdown("rlg", "RLG on digits: rate, reward and FID versus w", rows,
                                 ["w", f"rate of {TARGET}s", "mean reward", f"FID vs real {TARGET}s", "FID vs all digits", "NFE"],
                                 notes, args.quick)
    print(f"wrote {path}")
    common.result_line("rlg", **results)


if __name__ == "__main__":
    main()
