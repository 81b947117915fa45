"""Train the embedded few-step `digits-fast` model: `digits-flow` distilled by reflow (1-4 Euler steps).

Rectified flow's reflow (Liu et al. 2023, "Flow Straight and Fast", arXiv:2209.03003, Alg. 1 with
k = 1): the teacher (`digits-flow`, CFG-guided, many Euler ODE steps) turns noise z into x0 = T(z);
the student, the same SD3Transformer2DModel class initialised from the teacher, regresses the velocity
of the straight path between the *coupled* pair,

    x_t = (1 - t) x0 + t z,        loss = || v_student(x_t, t, c) - (z - x0) ||^2,

so its trajectories straighten and a few Euler steps reach the teacher's samples. Classifier-free
guidance (scale 3 for class labels) is distilled in: the student runs one pass per step, and the null
label keeps the teacher's unconditional distribution. Half the training times are drawn from the
1-, 2- and 4-step Euler grids, where the student is used.

    python scripts/train_digits_fast.py                  # writes diffalign/data/digits-fast
    python scripts/train_digits_fast.py --pairs 64 --steps 3 --teacher-steps 2 --out /tmp/f   # smoke test
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

import diffalign as da
from diffalign.atomic import atomic_directory
from diffalign.kernels import Euler
from diffalign.samplers.rollout import rollout
from digits_training import Conditioned

CFG = 3.0
NULL_FRACTION = 0.1
# the times a 1-, 2- or 4-step Euler sampler evaluates (flow schedule with shift 1)
FEW_STEP_TIMES = torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="diffalign/data/digits-fast", help="output directory (replaced atomically)")
    parser.add_argument("--teacher", default="digits-flow")
    parser.add_argument("--pairs", type=int, default=6000, help="teacher (noise, sample) pairs")
    parser.add_argument("--teacher-steps", type=int, default=16, help="teacher Euler steps per pair")
    parser.add_argument("--steps", type=int, default=1200, help="student optimisation steps")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    return parser.parse_args()


@torch.no_grad()
def teacher_pairs(teacher, count: int, steps: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(z, x0, label) with x0 the teacher's Euler-ODE sample from z; label = null for a tenth of them."""
    encoder = teacher.condition_encoder
    labels = torch.randint(encoder.num_classes, (count,), generator=generator)
    labels[torch.rand(count, generator=generator) < NULL_FRACTION] = encoder.null_index
    noise = torch.randn((count, *teacher.shape), generator=generator)
    guided = da.CFGDenoiser(teacher, CFG)  # on null rows CFG mixes null with null: the unconditional model
    grid = teacher.schedule.time_grid(steps)
    samples = []
    for z, y in tqdm(list(zip(noise.split(500), labels.split(500))), desc="teacher pairs"):
        samples.append(rollout(guided, z, grid, Euler(), encoder.lookup(y), generator))
    return noise, torch.cat(samples), labels


def reflow_times(n: int, generator: torch.Generator) -> torch.Tensor:
    uniform = torch.rand(n, generator=generator, dtype=torch.float64)
    grid = FEW_STEP_TIMES[torch.randint(len(FEW_STEP_TIMES), (n,), generator=generator)]
    return torch.where(torch.rand(n, generator=generator) < 0.5, grid, uniform)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    teacher = da.load_model(args.teacher)
    start = time.perf_counter()
    noise, targets, labels = teacher_pairs(teacher, args.pairs, args.teacher_steps, generator)
    print(f"{args.pairs} teacher pairs in {time.perf_counter() - start:.0f}s")

    student = Conditioned(copy.deepcopy(teacher.network), copy.deepcopy(teacher.condition_encoder))
    student.requires_grad_(True).train()
    schedule = teacher.schedule
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = max(1, min(100, args.steps // 10))
    lr_factor = lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, args.steps - warmup)))  # noqa: E731
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    ema = AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(args.ema))
    start = time.perf_counter()
    bar = tqdm(range(args.steps), desc="reflow", mininterval=5)
    for step in bar:
        idx = torch.randint(args.pairs, (args.batch_size,), generator=generator)
        z, x0, cond = noise[idx], targets[idx], student.condition.lookup(labels[idx])
        t = reflow_times(len(idx), generator)
        xt = schedule.add_noise(x0, z, t)
        velocity = student.network(hidden_states=xt, timestep=schedule.model_timestep(t).float(), **cond).sample
        loss = torch.nn.functional.mse_loss(velocity, z - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        ema.update_parameters(student)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    print(f"reflow: {args.steps} steps in {time.perf_counter() - start:.0f}s, last loss {loss.item():.4f}")
    trained = ema.module
    with atomic_directory(args.out) as tmp:
        trained.network.save_pretrained(tmp / "transformer")
        from diffusers import FlowMatchEulerDiscreteScheduler

        FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0).save_pretrained(tmp / "scheduler")
        trained.condition.save_pretrained(tmp)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
