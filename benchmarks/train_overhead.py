"""Trainer overhead and memory: a trainer step against the bare network passes it contains.

    python benchmarks/train_overhead.py [--quick]

* **Step overhead** (target <= 1.10): wall time of ``Trainer.train_step()`` divided by the time of the
  same network passes written by hand -- the same batch shapes through the same LoRA'd network, with
  an AdamW step, and nothing else (no kernels, log-probs, rewards, advantages, metrics, bookkeeping):
  - Flow-DPO from a pairs file: one forward+backward of the policy on winners+losers, one reference
    forward (adapters off);
  - GRPO: ``sample_steps`` no-grad forwards (the rollout), then one forward+backward per trained step.
* **Memory**: bytes of distinct weight, gradient and optimizer-state tensors the trainer holds, LoRA
  against full fine-tuning (Flow-DPO, which needs a reference); and each mode's peak RSS in a fresh
  process (dominated by the libraries at this model size).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from diffalign.trainers import config_from_dict, get_trainer  # noqa: E402

BASE = {"seed": 0, "model": {"name": "digits-flow", "lora_rank": 8}, "reward": {"name": "digit", "options": {"target": 3}},
        "train": {"report_to": "none", "checkpoint_every": 0, "max_steps": 1000, "learning_rate": 1e-4}}


def dpo_config(pairs_file: str, full: bool = False, pairs: int = 32):
    raw = {**BASE, "method": "flow_dpo", "pairs_file": pairs_file, "pairs_per_micro_batch": pairs, "noise_draws": 1}
    raw["model"] = {**BASE["model"], "full_finetune": full}
    return config_from_dict(raw)


def grpo_config(group_size: int = 16, groups: int = 4, steps: int = 10):
    return config_from_dict({**BASE, "method": "grpo", "group_size": group_size, "groups_per_micro_batch": groups,
                             "sample_steps": steps})


def write_pairs(path: Path, n: int = 256) -> str:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    save_file({"winners": torch.randn(n, 1, 8, 8, generator=g), "losers": torch.randn(n, 1, 8, 8, generator=g)}, str(path))
    return str(path)


def compare(step, bare, repeats: int) -> tuple[float, float]:
    """Median times of two functions, measured alternately so that machine noise hits both alike."""
    step(), bare()  # warm-up
    step_times, bare_times = [], []
    for _ in range(repeats):
        for fn, times in ((step, step_times), (bare, bare_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return sorted(step_times)[repeats // 2], sorted(bare_times)[repeats // 2]


def bare_dpo(trainer, n: int):
    from diffalign.models.lora import adapters_disabled

    model, shape = trainer.model, trainer.model.shape
    x = torch.randn(2 * n, *shape)
    t = torch.rand(2 * n, dtype=torch.float64)
    target = torch.randn(2 * n, *shape)

    def step():
        loss = (model(x, t, None) - target).square().mean()
        loss.backward()
        with torch.no_grad(), adapters_disabled(trainer.network):
            model(x, t, None)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    return step


def bare_grpo(trainer, n: int, steps: int):
    model, shape = trainer.model, trainer.model.shape
    x = torch.randn(n, *shape)
    t = torch.rand(n, dtype=torch.float64)

    def step():
        with torch.no_grad():
            for _ in range(steps):
                model(x, t, None)
        for _ in range(steps - 1):  # every stochastic step is trained (the last one is deterministic)
            model(x, t, None).square().mean().backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    return step


def held_bytes(trainer) -> dict[str, int]:
    """Distinct storages of weights, gradients and optimizer state held by the trainer."""
    seen, weights = set(), 0
    modules = [trainer.model] + ([trainer.reference] if trainer.reference is not None else [])
    for module in modules:
        for p in module.parameters():
            ptr = p.untyped_storage().data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                weights += p.untyped_storage().nbytes()
    grads = sum(p.numel() * p.element_size() for p in trainer.params)  # allocated at the first backward
    state = sum(v.numel() * v.element_size() for s in trainer.optimizer.optimizer.state.values() for v in s.values()
                if torch.is_tensor(v))
    return {"weights": weights, "grads": grads, "optimizer": state}


def memory_probe(full: bool) -> dict:
    """Run two DPO steps in this (fresh) process; report held bytes and peak RSS."""
    import resource

    with tempfile.TemporaryDirectory() as tmp:
        trainer = get_trainer("flow_dpo")(dpo_config(write_pairs(Path(tmp) / "pairs.safetensors"), full=full), Path(tmp) / "run")
        trainer.train_step()
        trainer.train_step()
        held = held_bytes(trainer)
    held["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return held


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--memory-probe", choices=["lora", "full"], help=argparse_hidden())
    args = p.parse_args()
    common.setup(args)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe == "full")))
        return
    repeats = 3 if args.quick else 21
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file = write_pairs(Path(tmp) / "pairs.safetensors")
        for label, key, make_trainer, bare in (
            ("Flow-DPO, 32 pairs from a file", "dpo", lambda: get_trainer("flow_dpo")(dpo_config(pairs_file), Path(tmp) / "dpo"),
             lambda tr: bare_dpo(tr, 32)),
            ("GRPO, 64 rollouts x 10 steps", "grpo", lambda: get_trainer("grpo")(grpo_config(), Path(tmp) / "grpo"),
             lambda tr: bare_grpo(tr, 64, 10)),
        ):
            trainer = make_trainer()
            step_time, bare_time = compare(trainer.train_step, bare(trainer), repeats)
            ratio = step_time / bare_time
            rows.append([label, f"{step_time * 1000:.0f}", f"{bare_time * 1000:.0f}", f"{ratio:.3f}"])
            results[f"{key}_overhead"] = f"{ratio:.3f}"
            print(f"{label}: step {step_time * 1000:.0f} ms, bare passes {bare_time * 1000:.0f} ms, ratio {ratio:.3f}", flush=True)

    memory = {}
    for mode in ("lora", "full"):
        out = subprocess.run([sys.executable, __file__, "--memory-probe", mode, "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        memory[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    mb = lambda b: f"{b / 2**20:.2f}"  # noqa: E731
    network_bytes = memory["lora"]["weights"]
    for mode in ("lora", "full"):
        m = memory[mode]
        rows.append([f"memory, Flow-DPO {mode}", "-", "-",
                     f"weights {mb(m['weights'])} MB ({m['weights'] / network_bytes:.2f} copies), grads {mb(m['grads'])} MB, "
                     f"optimizer {mb(m['optimizer'])} MB, peak RSS {mb(m['peak_rss'])} MB"])
        results[f"{mode}_weight_copies"] = f"{m['weights'] / network_bytes:.2f}"
    path = common.write_markdown(
        "train_overhead", "Trainer step overhead and memory", rows, ["measure", "step ms", "bare passes ms", "ratio / value"],
        f"`python benchmarks/train_overhead.py{' --quick' if args.quick else ''}`: median of {repeats} steps after a warm-up, trainer and bare steps alternating, "
        "digits-flow, LoRA rank 8. 'Bare passes' are the same network calls (same shapes, same LoRA'd network) and "
        "an AdamW step, written by hand; the ratio is what the trainer adds (kernels, log-probs, rewards, data, "
        "bookkeeping). 'copies' counts distinct weight bytes (base + LoRA + any reference copy) in units of the LoRA "
        "model's.", args.quick)
    print(f"wrote {path}")
    common.result_line("train_overhead", **results)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
