"""`diffalign demo --world digits`: base samples vs best-of-n for a target digit, on both embedded models.

Writes ``grid.png`` (one row per model x method) and ``report.md`` (sampler, NFE, mean reward,
class accuracy). Takes about a minute on 2 CPU cores (57 s measured).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .atomic import atomic_write_bytes
from .evaluation import class_accuracy
from .images import save_grid
from .models import CFGDenoiser
from .zoo import load_model
from .rewards import get as get_reward
from .samplers import get as get_sampler

MODELS = ("digits", "digits-flow")
CFG_SCALE = 3.0


def run_demo(out_dir: Path, target: int = 3, num_samples: int = 16, candidates: int = 32, steps: int = 50, seed: int = 0):
    out_dir = Path(out_dir)
    reward = get_reward("digit", target=target)
    rows, images = [], []
    for name in MODELS:
        model = load_model(name)
        runs = [
            ("ancestral (unconditional)", model, get_sampler("ancestral"), None, None),
            (f"best-of-{candidates} (unconditional)", model, get_sampler("best-of-n", progress=True),
             num_samples * candidates * steps, None),
            (f"ancestral + CFG {CFG_SCALE:g} (class {target})", CFGDenoiser(model, CFG_SCALE), get_sampler("ancestral"),
             None, target),
        ]
        for label, denoiser, sampler, nfe, cond in runs:
            start = time.perf_counter()
            out = sampler.sample(denoiser, reward, num_samples=num_samples, nfe=nfe, steps=steps, seed=seed, cond=cond)
            pixels = model.decode(out.samples)
            images.append(pixels)
            rows.append((name, label, out.nfe, out.rewards.mean().item(), class_accuracy(pixels, target),
                         time.perf_counter() - start))
            print(f"{name:12s} {label:32s} NFE {out.nfe:7d}  mean log p({target}|x) {rows[-1][3]:7.3f}  "
                  f"accuracy {rows[-1][4]:.2f}")
    labels = [f"{name}, {label}: {nfe} NFE, mean reward {reward:.2f}" for name, label, nfe, reward, *_ in rows]
    save_grid(torch.cat(images), out_dir / "grid.png", nrow=num_samples, row_labels=labels)
    atomic_write_bytes(out_dir / "report.md", _report(rows, target, num_samples, steps, seed).encode())
    print(f"wrote {out_dir / 'grid.png'} and {out_dir / 'report.md'}")
    return rows


def _report(rows, target, num_samples, steps, seed) -> str:
    lines = [
        f"# diffalign demo: target digit {target}",
        "",
        f"{num_samples} samples per row, {steps} steps, seed {seed}. Reward: `digit` (log p({target}|x) from the "
        "embedded classifier). Class accuracy: fraction of samples the classifier labels as the target.",
        "`grid.png` shows the rows in this order, one sample per column, each labelled with its model, sampler, "
        "NFE and mean reward.",
        "",
        "| model | sampler | NFE | mean reward | class accuracy | seconds |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {m} | {s} | {n} | {r:.3f} | {a:.2f} | {t:.1f} |" for m, s, n, r, a, t in rows]
    return "\n".join(lines) + "\n"
