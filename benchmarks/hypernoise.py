"""HyperNoise vs ReNO vs the base model on the few-step `digits-fast` generator.

    python benchmarks/hypernoise.py [--quick]

The reward is the differentiable `digit` classifier's log p(y = target | x); samples are unconditional
(so the base model draws the target class about a tenth of the time). Rows:

* base -- g(z), z ~ N(0, I), ``--steps`` Euler steps;
* HyperNoise -- g(z + f(z)) with f trained here by the ``hypernoise`` trainer (configs/hypernoise_digits.yaml,
  the LoRA form at t = 1); its training time is reported separately;
* ReNO -- per-sample optimisation of z (paper defaults: SGD Nesterov, lr 5, clip 0.1, lambda 0.01).

Metrics: mean reward, target-class rate, FID (classifier features) against the base model's own
samples of the target class (class-conditional digits-fast), ||f(z)|| (for ReNO ||z* - z||), forward
passes per sample (a backward pass counts as one more, as for reward guidance) and wall time per sample.
Headline: the fraction of ReNO's reward gain HyperNoise recovers, (R_hyper - R_base) / (R_reno - R_base),
and its cost relative to ReNO.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import diffalign as da  # noqa: E402
from diffalign.evaluation import classify, fid  # noqa: E402
from diffalign.trainers import get_trainer, load_config  # noqa: E402

PRESET = Path(__file__).resolve().parent.parent / "configs" / "hypernoise_digits.yaml"


def evaluate(model, out, target, reference, seconds):
    images = model.decode(out.samples)
    n = len(out.samples)
    return {
        "reward": out.rewards.double().mean().item(),
        "rate": (classify(images) == target).float().mean().item(),
        "fid": fid(images, reference),
        "nfe": out.nfe / n,
        "ms": 1000 * seconds / n,
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="digits-fast")
    p.add_argument("--steps", type=int, default=2, help="generator Euler steps")
    p.add_argument("--target", type=int, default=3)
    p.add_argument("--forms", default="lora,mlp", help="hypernetwork forms to train and compare (lora: the paper's)")
    p.add_argument("--samples", type=int, help="samples per row (default 512; --quick 96)")
    p.add_argument("--train-steps", type=int, help="HyperNoise training steps (default 200; --quick 40)")
    p.add_argument("--iterations", type=int, default=50, help="ReNO iterations")
    args = p.parse_args()
    common.setup(args)
    n, train_steps, n_ref = (96, 40, 256) if args.quick else (512, 200, 1000)
    n, train_steps, iterations = args.samples or n, args.train_steps or train_steps, args.iterations

    model = da.load_model(args.model)
    reward = da.rewards.get("digit", target=args.target)
    reference_out = da.sample(model, None, sampler="ancestral", kernel="euler", num_samples=n_ref, steps=args.steps,
                              seed=100, cond=args.target)
    reference = model.decode(reference_out.samples)

    rows, stats = [], {}
    start = time.perf_counter()
    base = da.sample(model, reward, sampler="ancestral", kernel="euler", num_samples=n, steps=args.steps, seed=1)
    stats["base"] = evaluate(model, base, args.target, reference, time.perf_counter() - start)
    stats["base"]["offset"] = "-"

    train_seconds = {}
    for form in args.forms.split(","):
        with tempfile.TemporaryDirectory() as run_dir:
            config = load_config(PRESET, [f"model.name={args.model}", f"train.max_steps={train_steps}", f"form={form}",
                                          f"generator_steps={args.steps}", f"reward.options.target={args.target}",
                                          "train.report_to=none", "train.checkpoint_every=0"])
            start = time.perf_counter()
            metrics = get_trainer("hypernoise")(config, run_dir).train()
            train_seconds[form] = time.perf_counter() - start
            print(f"hypernoise {form} training: {train_steps} steps in {train_seconds[form]:.0f}s, last reward {metrics['reward']:.3f}")
            sampler = da.samplers.get("hypernoise", path=str(Path(run_dir) / "final"))
            sampler.hypernetwork_for(model)  # load it before the clock starts (a one-off, like loading the model)
            start = time.perf_counter()
            hyper = sampler.sample(model, reward, num_samples=n, steps=args.steps, seed=1)
            stats[form] = evaluate(model, hyper, args.target, reference, time.perf_counter() - start)
            norms = hyper.info["offset_norms"]
            stats[form]["offset"] = f"{norms.mean().item():.2f} (max {norms.max().item():.2f})"

    start = time.perf_counter()
    reno = da.sample(model, reward, sampler="reno", num_samples=n, steps=args.steps, seed=1, iterations=iterations, progress=True)
    stats["reno"] = evaluate(model, reno, args.target, reference, time.perf_counter() - start)
    shifts = reno.info["noise_shift_norms"]
    stats["reno"]["offset"] = f"{shifts.mean().item():.2f} (max {shifts.max().item():.2f})"

    gain_reno = stats["reno"]["reward"] - stats["base"]["reward"]
    headline, results = [], {}
    for form in train_seconds:
        recovered = (stats[form]["reward"] - stats["base"]["reward"]) / gain_reno
        rate_recovered = (stats[form]["rate"] - stats["base"]["rate"]) / max(1e-9, stats["reno"]["rate"] - stats["base"]["rate"])
        nfe_ratio = stats[form]["nfe"] / stats["reno"]["nfe"]
        time_ratio = stats[form]["ms"] / stats["reno"]["ms"]
        headline.append(
            f"**HyperNoise ({form}) recovers {recovered:.0%} of ReNO's reward gain** ({rate_recovered:.0%} of its "
            f"target-rate gain) at {nfe_ratio:.3f} of its forward passes (1/{1 / nfe_ratio:.0f}) and {time_ratio:.3f} of its "
            f"wall time per sample (1/{1 / time_ratio:.0f}); trained in {train_seconds[form]:.0f} s."
        )
        results.update({f"{form}_recovered": f"{recovered:.3f}", f"{form}_rate_recovered": f"{rate_recovered:.3f}",
                        f"{form}_nfe_ratio": f"{nfe_ratio:.4f}", f"{form}_time_ratio": f"{time_ratio:.4f}",
                        f"{form}_reward": f"{stats[form]['reward']:.3f}", f"{form}_train_seconds": f"{train_seconds[form]:.0f}"})
    names = {"base": "base", "reno": f"ReNO ({iterations} iterations)", "lora": f"HyperNoise, LoRA at t = 1 ({train_steps} training steps)",
             "mlp": f"HyperNoise, separate MLP ({train_steps} training steps)"}
    for key, s in stats.items():
        rows.append([names[key], f"{s['reward']:.3f}", f"{s['rate']:.3f}", f"{s['fid']:.2f}", s["offset"],
                     f"{s['nfe']:.0f}", f"{s['ms']:.2f}"])
    notes = (
        f"`python benchmarks/hypernoise.py{' --quick' if args.quick else ''}`: `{args.model}`, {args.steps} Euler steps, "
        f"{n} unconditional samples per row (seed 1), reward `digit` target {args.target} (log-probability). FID against "
        f"{n_ref} class-{args.target} samples of the base model (classifier features). HyperNoise: configs/hypernoise_digits.yaml "
        f"(reward weight {config.reward_weight:g}), {train_steps} steps of {config.noises_per_micro_batch} noises; training "
        f"time is not in the per-sample figures. NFE counts a backward pass as one more pass (as for reward guidance); the "
        f"LoRA hypernetwork's two network passes are NFE, the MLP's are not. Wall times were measured while other jobs "
        f"shared the machine; compare them within this table. Target: >= 60% of ReNO's gain at <= 1/20 of its compute.\n\n"
        + "\n\n".join(headline)
    )
    path = common.write_markdown(
        "hypernoise", f"HyperNoise vs ReNO on {args.model}", rows,
        ["method", "mean reward", f"class-{args.target} rate", "FID vs base class samples", "‖f(z)‖ (ReNO: ‖z* − z‖)",
         "NFE / sample", "ms / sample"], notes, args.quick,
    )
    print(f"wrote {path}")
    common.result_line("hypernoise", base_reward=f"{stats['base']['reward']:.3f}", reno_reward=f"{stats['reno']['reward']:.3f}",
                       **results)


if __name__ == "__main__":
    main()
