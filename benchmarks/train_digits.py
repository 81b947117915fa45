"""Fine-tuning on the digits task: target-class rate, reward and FID drift versus wall time.

    python benchmarks/train_digits.py [--quick] [--only grpo,flow_dpo,...]

Task: make *unconditional* samples of the embedded models a "3" with reward ``digit`` (target 3),
LoRA rank 8, from the presets in ``configs/``. Each method trains in this process for its preset's
``max_steps`` (``--quick``: a twentieth) or until a wall-clock budget runs out (GRPO on digits-flow: 15
minutes, the issue's target; the others: ``--minutes``), and is evaluated at evenly spaced steps
(evaluation time excluded from the clock):

* target-class rate of unconditional samples (classified by the embedded classifier; base ~10%);
* mean reward of those samples;
* at the end, FID drift: the tuned model's unconditional samples against the held-out real 3s, in the
  classifier's features, beside the base model's CFG-3 samples of class 3 and the real-vs-real floor
  (training 3s against held-out 3s).

Targets: GRPO reaches a rate >= 0.90 within 15 minutes on 2 CPU cores, with FID <= 2x the base
model's CFG samples of the class.
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
from diffalign.datasets import load_digits_split, to_model_space  # noqa: E402
from diffalign.evaluation import classify, fid  # noqa: E402
from diffalign.trainers import get_trainer, load_config  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TARGET = 3
CFG = 3.0
# label, preset, overrides, budget in minutes (None: --minutes)
RUNS = {
    "grpo": ("GRPO, digits-flow (flow SDE)", "grpo_digits.yaml", [], 15.0),
    "grpo_ddim": ("GRPO, digits (DDIM eta=1)", "grpo_ddim_digits.yaml", [], None),
    "flow_dpo": ("Flow-DPO, constant beta", "flow_dpo_digits.yaml", [], None),
    "flow_dpo_timestep": ("Flow-DPO, beta (1-t)^2", "flow_dpo_digits.yaml", ["beta_schedule=timestep"], None),
    "diffusion_dpo": ("Diffusion-DPO, digits", "diffusion_dpo_digits.yaml", [], None),
    "rwr": ("Flow-RWR, exp(r)", "rwr_digits.yaml", [], None),
}


@torch.no_grad()
def evaluate(model, n: int, steps: int, seed: int = 1234):
    out = da.sample(model, None, num_samples=n, steps=steps, seed=seed, progress=False)
    images = model.decode(out.samples)
    reward = da.rewards.get("digit", target=TARGET)(images)
    return (classify(images) == TARGET).float().mean().item(), reward.mean().item(), images


def train_for(key: str, minutes: float, eval_points: int, n_eval: int, steps: int, workdir: Path, quick: bool):
    """Train a preset until its max_steps (the recipe) or the wall-clock budget, evaluating as it goes."""
    label, preset, overrides, _ = RUNS[key]
    config = load_config(CONFIGS / preset, overrides + ["train.report_to=none", "train.checkpoint_every=0"])
    trainer = get_trainer(config.method)(config, workdir / key)
    max_steps = config.train.max_steps // (20 if quick else 1)
    budget = minutes * 60.0
    marks = [max_steps * (i + 1) // eval_points for i in range(eval_points)]
    rate, reward, _ = evaluate(trainer.model, n_eval, steps)
    curve = [(0.0, 0, rate, reward)]
    print(f"{label}: start rate {rate:.3f} reward {reward:.3f}", flush=True)
    trained, first_hit = 0.0, None
    while trained < budget and trainer.step < max_steps:
        start = time.perf_counter()
        trainer.train_step()
        trained += time.perf_counter() - start
        if trainer.step >= marks[0] or trained >= budget:
            while marks and trainer.step >= marks[0]:
                marks.pop(0)
            rate, reward, _ = evaluate(trainer.model, n_eval, steps)
            curve.append((trained, trainer.step, rate, reward))
            if first_hit is None and rate >= 0.9:
                first_hit = trained
            print(f"{label}: {trained / 60:.1f} min, step {trainer.step}, rate {rate:.3f}, reward {reward:.3f}", flush=True)
    return trainer, curve, first_hit


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(RUNS), help=f"comma-separated subset of {', '.join(RUNS)}")
    p.add_argument("--minutes", type=float, default=4.0, help="budget of the methods other than GRPO on digits-flow")
    p.add_argument("--steps", type=int, default=20, help="sampling steps of the evaluation samples")
    args = p.parse_args()
    common.setup(args)
    keys = [k for k in args.only.split(",") if k]
    unknown = [k for k in keys if k not in RUNS]
    if unknown:
        p.error(f"unknown run {unknown[0]!r}; valid choices: {', '.join(RUNS)}")
    n_eval, n_fid, eval_points = (32, 64, 2) if args.quick else (256, 512, 10)

    train, test = load_digits_split("train"), load_digits_split("test")
    real_test = test.images[test.labels == TARGET]
    floor = fid(train.images[train.labels == TARGET], real_test)
    base_scores = {}
    for name in ("digits-flow", "digits"):
        base = da.load_model(name)
        cfg = da.sample(da.CFGDenoiser(base, CFG), None, num_samples=n_fid, steps=args.steps, seed=7, cond=TARGET, progress=False)
        rate, reward, images = evaluate(base, n_fid, args.steps, seed=8)
        base_scores[name] = {"cfg_fid": fid(base.decode(cfg.samples), real_test), "rate": rate, "reward": reward}
        print(f"base {name}: unconditional rate {rate:.3f}, reward {reward:.3f}, CFG-{CFG:g} FID {base_scores[name]['cfg_fid']:.2f}")

    rows, results, curves = [], {"fid_floor": f"{floor:.2f}"}, {}
    with tempfile.TemporaryDirectory() as workdir:
        for key in keys:
            label, preset, overrides, minutes = RUNS[key]
            minutes = (minutes if minutes is not None else args.minutes) * (1 / 15 if args.quick else 1)
            trainer, curve, first_hit = train_for(key, minutes, eval_points, n_eval, args.steps, Path(workdir), args.quick)
            rate, reward, images = evaluate(trainer.model, n_fid, args.steps, seed=99)
            name = trainer.config.model.name
            score = fid(images, real_test)
            ratio = score / base_scores[name]["cfg_fid"]
            step_seconds = curve[-1][0] / max(1, trainer.step)
            curves[label] = curve
            progress = " → ".join(f"{r:.2f}" for _, _, r, _ in curve)
            rows.append([label, name, f"{curve[-1][0] / 60:.1f}", trainer.step, f"{step_seconds:.2f}", progress,
                         f"{rate:.3f}", f"{reward:.3f}", f"{first_hit / 60:.1f}" if first_hit else "not reached",
                         f"{score:.2f}", f"{ratio:.2f}"])
            results.update({f"{key}_rate": f"{rate:.3f}", f"{key}_fid_ratio": f"{ratio:.2f}",
                            f"{key}_minutes_to_90": f"{first_hit / 60:.1f}" if first_hit else "none"})
            print(f"{label}: final rate {rate:.3f}, reward {reward:.3f}, FID {score:.2f} ({ratio:.2f}x base CFG)", flush=True)

    notes = (
        f"`python benchmarks/train_digits.py{' --quick' if args.quick else ''}`: presets in `configs/`, LoRA rank 8, target "
        f"digit {TARGET}, unconditional sampling. Rate = share of {n_eval} unconditional samples ({args.steps} steps, default "
        f"stochastic kernel) that the classifier labels {TARGET}, at {eval_points} evenly spaced points of training time "
        f"(evaluation excluded); final rate, reward and FID on {n_fid} samples. FID: classifier features against the "
        f"{len(real_test)} held-out real {TARGET}s; base CFG-{CFG:g} samples of class {TARGET}: digits-flow "
        f"{base_scores['digits-flow']['cfg_fid']:.2f}, digits {base_scores['digits']['cfg_fid']:.2f}; real-vs-real floor "
        f"{floor:.2f}. Base unconditional rates: digits-flow {base_scores['digits-flow']['rate']:.3f}, digits "
        f"{base_scores['digits']['rate']:.3f}."
    )
    # a subset (--only) writes its own file, so it never replaces the full table's rows
    name = "train_digits" if keys == list(RUNS) else "train_digits-" + "-".join(keys)
    path = common.write_markdown(
        name, "Fine-tuning on digits: target-class rate, reward and FID drift", rows,
        ["method", "model", "train min", "steps", "s/step", "rate over time", "final rate", "mean reward",
         "min to rate 0.9", f"FID vs real {TARGET}s", "FID / base CFG"],
        notes, args.quick,
    )
    _plot(curves, path.with_suffix(".png"))
    print(f"wrote {path}")
    common.result_line("train_digits", **results)


def _plot(curves, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in curves.items():
        ax.plot([c[0] / 60 for c in curve], [c[2] for c in curve], marker="o", label=label)
    ax.axhline(0.9, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("training wall time (min, 2 CPU threads)")
    ax.set_ylabel(f"share of unconditional samples that are {TARGET}s")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
