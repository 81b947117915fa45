"""Reward-gradient guidance on the digits models: x0-hat (DPS-style) gradients vs a noisy reward model.

    python benchmarks/guidance.py [--quick] [--scales 0 1 3 10] [--models digits-flow digits]

Task: make *unconditional* samples a "3" with the reward r = log p(3 | x) of the embedded classifier,
by guiding the ancestral sampler with ``da.RewardGuidance`` at scale w (target p(x) exp(w r)). Two
gradient sources with the same reward:

* ``x0-hat``: grad_{x_t} r(decode(x0_hat(x_t))), back through the denoiser (forward + backward = 2 NFE
  per sample and guided step);
* ``noisy RM``: grad_{x_t} r_phi(x_t, t) of a noisy reward model trained here first (the
  ``noisy_reward`` trainer on base samples labelled by the same reward; 1 NFE per step, reward-model
  evaluations are not counted, as for every sampler).

Each source runs unclipped and with the per-sample gradient norm clipped to 1 (``max_grad_norm``),
over the whole trajectory ("all t") and at high noise only ("t >= 0.5": guidance stops at
t = 0.5 and the rest is unguided), which is where a value estimate through x0_hat is poorest. Reported:
target-class rate (classifier argmax), mean reward, FID against the held-out real 3s (classifier
features; noisy with ~36 real images), NFE spent, and the noisy reward model's held-out pairwise
accuracy at several t.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.datasets import load_digits_split  # noqa: E402
from diffalign.evaluation import classify, fid  # noqa: E402
from diffalign.trainers import get_trainer, load_config  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TARGET = 3
REGIMES = {"all t": 0.0, "t >= 0.5": 0.5}  # label -> t_stop
CLIP = 1.0  # per-sample gradient-norm clip of the clipped rows


def train_noisy_reward(model_name: str, workdir: Path, quick: bool) -> tuple[Path, dict, float]:
    overrides = [f"model.name={model_name}", "train.report_to=none", "train.checkpoint_every=0"]
    if quick:
        overrides += ["pool_size=800", "holdout_pairs=800", "train.max_steps=150", "sample_steps=10"]
    config = load_config(CONFIGS / "noisy_reward_digits.yaml", overrides)
    start = time.perf_counter()
    trainer = get_trainer("noisy_reward")(config, workdir / model_name)
    trainer.train()
    accuracy = json.loads((workdir / model_name / "final" / "eval.json").read_text())["pairwise_accuracy"]
    return workdir / model_name, accuracy, time.perf_counter() - start


def evaluate(model, guided, n: int, steps: int, seed: int, reference: torch.Tensor):
    out = da.sample(guided, None, num_samples=n, steps=steps, seed=seed, progress=False)
    images = model.decode(out.samples)
    reward = da.rewards.get("digit", target=TARGET)(images)
    rate = (classify(images) == TARGET).float().mean().item()
    return rate, reward.mean().item(), fid(images, reference), out.nfe


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=["digits-flow", "digits"])
    p.add_argument("--scales", type=float, nargs="*", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=None, help="samples per row of the full run (default 256)")
    args = p.parse_args()
    common.setup(args)
    # The full size fits one ~15-minute slot on 2 CPU cores (2 models x 25 rows); --samples raises it.
    n, steps = (64, 20) if args.quick else (args.samples or 256, 30)
    scales = args.scales or ([0.0, 3.0, 10.0] if args.quick else [0.0, 1.0, 3.0, 10.0])
    test = load_digits_split("test")
    reference = test.images[test.labels == TARGET]
    reward = da.rewards.get("digit", target=TARGET)

    rows, results, accuracies = [], {}, {}
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            model = da.load_model(name)
            rm_dir, accuracy, seconds = train_noisy_reward(name, Path(workdir), args.quick)
            accuracies[name] = (accuracy, seconds)
            print(f"{name}: noisy reward model trained in {seconds:.0f} s, held-out pairwise accuracy {accuracy}", flush=True)
            noisy = da.rewards.get("noisy-reward", path=str(rm_dir))
            # label -> (objective, max_grad_norm): each source unclipped and with per-sample clipping
            sources = {"x0-hat": (reward, None), f"x0-hat, clip {CLIP:g}": (reward, CLIP),
                       "noisy RM": (noisy, None), f"noisy RM, clip {CLIP:g}": (noisy, CLIP)}
            best = {}
            for regime, t_stop in REGIMES.items():
                for source, (objective, clip) in sources.items():
                    for w in scales:
                        if w == 0 and (regime, source) != ("all t", "x0-hat"):
                            continue  # w = 0 is the unguided model, measured once
                        guided = da.RewardGuidance(model, objective, scale=w, t_stop=t_stop, max_grad_norm=clip)
                        rate, mean, score, nfe = evaluate(model, guided, n, steps, args.seed, reference)
                        label = "none (w = 0)" if w == 0 else source
                        rows.append([name, regime if w else "-", label, f"{w:g}", f"{rate:.3f}", f"{mean:.3f}",
                                     f"{score:.2f}", f"{nfe:,}"])
                        print(f"{name} {regime:9s} {label:20s} w={w:<5g} rate {rate:.3f} reward {mean:.3f} "
                              f"FID {score:.2f} NFE {nfe:,}", flush=True)
                        if w:
                            best[(regime, source)] = max(best.get((regime, source), 0.0), rate)
            key = name.replace("-", "_")
            for regime in REGIMES:
                tag = "all" if regime == "all t" else "high"
                for source, short in (("x0-hat", "x0"), ("noisy RM", "nrm")):
                    results[f"{key}_{tag}_{short}_rate"] = f"{best[(regime, source)]:.3f}"
                    results[f"{key}_{tag}_{short}_clip_rate"] = f"{best[(regime, f'{source}, clip {CLIP:g}')]:.3f}"

    accuracy_text = "; ".join(
        f"{name}: " + ", ".join(f"t={t} {a:.3f}" for t, a in acc.items()) + f" (trained in {s:.0f} s)"
        for name, (acc, s) in accuracies.items())
    notes = (
        f"`python benchmarks/guidance.py{' --quick' if args.quick else ''}`: unconditional ancestral sampling "
        f"(default stochastic kernel), {steps} steps, {n} samples per row, seed {args.seed}; reward log p({TARGET} | x); "
        f"FID against the {len(reference)} held-out real {TARGET}s. NFE: forward + backward through the denoiser = 2 per "
        "sample and guided step; reward-model passes are not counted. Noisy reward model: "
        f"`configs/noisy_reward_digits.yaml`{' (quick: 800 samples, 150 steps)' if args.quick else ''}; held-out pairwise "
        f"accuracy {accuracy_text}."
    )
    path = common.write_markdown(
        "guidance", "Reward guidance on digits: x0-hat gradients vs a noisy reward model", rows,
        ["model", "guided while", "gradient", "w", f"rate of {TARGET}s", "mean reward", f"FID vs real {TARGET}s", "NFE"],
        notes, args.quick)
    print(f"wrote {path}")
    common.result_line("guidance", **results)


if __name__ == "__main__":
    main()
