"""Shared training loop for the embedded digits generators (used by train_digits*.py).

Seeded and single-process on purpose: it reproduces the shipped weights on any CPU.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from diffalign.datasets import load_digits_split, to_model_space
from diffalign.models.class_condition import ClassEmbeddingCondition

LossFn = Callable[[torch.nn.Module, torch.Tensor, dict, torch.Generator], torch.Tensor]


def parse_args(description: str, default_out: str, default_steps: int, default_label_dropout: float = 0.1) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=default_out, help="output directory (replaced atomically)")
    parser.add_argument("--steps", type=int, default=default_steps)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--label-dropout", type=float, default=default_label_dropout, help="rate of the null embedding")
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--tiny", action="store_true", help="tiny architecture (smoke tests)")
    return parser.parse_args()


class Conditioned(torch.nn.Module):
    """Network + class embeddings trained together."""

    def __init__(self, network: torch.nn.Module, condition: ClassEmbeddingCondition):
        super().__init__()
        self.network = network
        self.condition = condition


def train(model: Conditioned, loss_fn: LossFn, args: argparse.Namespace) -> Conditioned:
    """Train with AdamW + cosine decay and return the EMA copy."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    data = load_digits_split("train")
    images, labels = to_model_space(data.images), data.labels
    null = model.condition.null_index

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = min(200, max(1, args.steps // 10))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema))
    start = time.perf_counter()
    bar = tqdm(range(args.steps), desc="train", mininterval=5)
    for step in bar:
        idx = torch.randint(len(images), (args.batch_size,), generator=generator)
        x0, y = images[idx], labels[idx].clone()
        y[torch.rand(len(y), generator=generator) < args.label_dropout] = null
        loss = loss_fn(model.network, x0, model.condition.lookup(y), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        ema.update_parameters(model)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f}s, last loss {loss.item():.4f}")
    return ema.module


def output_dir(args: argparse.Namespace) -> Path:
    return Path(args.out)
