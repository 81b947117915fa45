"""Sharding: bytes per process and step time for 1 and 2 processes, sharded (FSDP2) and not.

    python benchmarks/sharding.py [--quick]

Each configuration runs in fresh processes (``torchrun --nproc_per_node 2`` for two, gloo on CPU): RWR on the
embedded ``digits-flow`` model, LoRA and full fine-tuning, the same global batch (1 process: gradient
accumulation 2; 2 processes: 1 each). Bytes are read from the tensors each process holds (local DTensor shards
under ``fsdp``): network weights, the trainable parameters' gradients, AdamW's state. Step time is the median
wall time of ``Trainer.train_step()`` after one warm-up step, on rank 0. On this embedded model the step is
dominated by process-group and Python overheads, not by arithmetic: the times say what sharding costs at a
toy size, not what it saves at 12B. 4 processes are not run (the CI machine has 2 cores).

Checkpoint: one ``Trainer.save_checkpoint()`` after the steps (weights, AdamW, no EMA), its wall time on rank 0
and the bytes rank 0 wrote. Unsharded, rank 0 writes the whole state (under ``fsdp`` with 1 process too);
under ``fsdp`` on 2 processes each rank writes its own shards through ``torch.distributed.checkpoint``
(plus rank 0's small index, RNG and state.json).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def raw_config(full: bool, accumulation: int, sharding: str) -> dict:
    return {"method": "rwr", "seed": 0, "group_size": 4, "groups_per_micro_batch": 2, "noise_draws": 2, "sample_steps": 4,
            "model": {"name": "digits-flow", "lora_rank": 8, "full_finetune": full},
            "reward": {"name": "digit", "options": {"target": 3}},
            "train": {"report_to": "none", "checkpoint_every": 0, "max_steps": 100, "learning_rate": 1e-4,
                      "gradient_accumulation_steps": accumulation, "sharding": sharding}}


def worker(config_json: str, out: str, steps: int) -> None:
    """One process of a configuration: time ``steps`` train steps, then measure what it holds."""
    import torch

    from diffalign.trainers import config_from_dict, get_trainer
    from diffalign.trainers.seeding import seeded_generator
    from diffalign.trainers.sharding import local_tensor

    config = config_from_dict(json.loads(config_json))
    trainer = get_trainer("rwr")(config, Path(out) / "run")
    trainer.train_step()  # warm-up (and AdamW's state exists from here)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - start)
    index = trainer.my_micro_batches()[0]
    batch = trainer.make_micro_batch(trainer.step, index, seeded_generator(config.seed, trainer.step, index))
    loss, _ = trainer.compute_loss(batch, 0)
    loss.backward()  # gradients as a step holds them before the update

    def nbytes(tensors):
        return sum(local_tensor(t).numel() * t.element_size() for t in tensors)

    state = [t for s in trainer.optimizer.optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    report = {"weights": nbytes(trainer.network.parameters()), "grads": nbytes(p.grad for p in trainer.params if p.grad is not None),
              "adamw": nbytes(state), "step_s": statistics.median(times)}
    trainer.optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    trainer.save_checkpoint()
    report["ckpt_s"] = time.perf_counter() - start
    rank = trainer.accelerator.process_index
    directory = trainer.checkpoints_dir / f"step-{trainer.step:06d}"
    mine = list(directory.glob(f"shards/__{rank}_*.distcp")) + (
        [f for f in directory.rglob("*") if f.is_file() and "__" not in f.name] if rank == 0 else [])
    report["ckpt_bytes"] = sum(f.stat().st_size for f in mine)
    Path(out, f"rank-{trainer.accelerator.process_index}.json").write_text(json.dumps(report))


def run(full: bool, processes: int, sharding: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        config = json.dumps(raw_config(full, 2 // processes, sharding))
        launch = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        done = subprocess.run(launch + [__file__, "--worker", config, out, str(steps)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        return json.loads(Path(out, "rank-0.json").read_text())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    steps = 3 if args.quick else 10
    rows, results = [], {}
    for full in (False, True):
        for processes, sharding in ((1, "none"), (2, "none"), (2, "fsdp")):
            r = run(full, processes, sharding, steps)
            mode = "full" if full else "lora"
            label = f"{mode}-{processes}p-{sharding}"
            rows.append([mode, processes, sharding, f"{r['weights'] / 2**20:.3f}", f"{r['grads'] / 2**20:.3f}",
                         f"{r['adamw'] / 2**20:.3f}", f"{r['step_s'] * 1000:.0f}", f"{r['ckpt_bytes'] / 2**20:.3f}",
                         f"{r['ckpt_s'] * 1000:.0f}"])
            results[f"{label}_bytes"] = r["weights"] + r["grads"] + r["adamw"]
            results[f"{label}_ms"] = round(r["step_s"] * 1000)
            results[f"{label}_ckpt_bytes_rank0"] = r["ckpt_bytes"]
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    path = common.write_markdown("sharding", "Sharding: bytes per process and step time", rows,
                                 ["mode", "processes", "sharding", "weights MiB", "grads MiB", "AdamW MiB", "step ms (rank 0)",
                                  "checkpoint MiB written by rank 0", "checkpoint ms"],
                                 __doc__.split("\n\n", 2)[2], args.quick)
    print(f"wrote {path}")
    common.result_line("sharding", **results)


if __name__ == "__main__":
    main()
