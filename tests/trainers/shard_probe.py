"""Run under torchrun by test_sharding.py: build a trainer from a config file, take one step, and write
what this process holds (local shard sizes, read from the tensors) to OUT/rank-<r>.json; then save a
checkpoint, step, reload the checkpoint, step again, and report whether both second steps agree bit for bit."""

import json
import sys
from pathlib import Path

import torch

from diffalign.trainers import get_trainer, load_config
from diffalign.trainers.seeding import seeded_generator
from diffalign.trainers.sharding import full_tensor, local_tensor


def main(config_path: str, out: str) -> None:
    config = load_config(config_path)
    trainer = get_trainer(config.method)(config, Path(out) / "run")
    trainer.train_step()
    state = [t for s in trainer.optimizer.optimizer.state.values() for t in s.values() if t.dim() > 0]
    report = {
        "rank": trainer.accelerator.process_index,
        "trainable_local": sum(local_tensor(p).numel() for p in trainer.params),
        "trainable_global": sum(p.numel() for p in trainer.params),
        "weights_local": sum(local_tensor(p).numel() for p in trainer.network.parameters()),
        "weights_global": sum(p.numel() for p in trainer.network.parameters()),
        "optimizer_local": sum(local_tensor(t).numel() for t in state),
        "optimizer_global": sum(t.numel() for t in state),
    }
    if trainer.reference is not None:  # the offload policy FSDP applies to the reference's units (train.offload)
        from diffalign.trainers.sharding import block_modules

        units = [block for _, block in block_modules(trainer.reference.network)] + [trainer.reference.network]
        report["reference_offload"] = sorted({type(u._get_fsdp_state()._fsdp_param_group.offload_policy).__name__ for u in units})
        report["reference_on_host"] = all(local_tensor(p).device.type == "cpu" for p in trainer.reference.network.parameters())
    index = trainer.my_micro_batches()[0]
    loss, _ = trainer.compute_loss(trainer.make_micro_batch(1, index, seeded_generator(0, 1, index)), 0)
    loss.backward()  # FSDP reduce-scatters: each process holds its shard of the averaged gradient
    full = torch.cat([full_tensor(p.grad).reshape(-1) for p in trainer.params])
    report["grad_norm_gathered"] = float(full.double().norm())
    report["grad_norm_clip"] = float(full_tensor(trainer.accelerator.clip_grad_norm_(trainer.params, 1e9)))  # what the step logs
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.save_checkpoint()  # sharded (DCP): each process writes its own shards
    trainer.train_step()
    straight = trainer.trainable_state()
    ema = [local_tensor(t).clone() for t in trainer.ema.shadow_params] if trainer.ema is not None else []
    assert trainer.resume() and trainer.step == 1  # back to the checkpoint: weights, AdamW, EMA read into the shards
    trainer.train_step()
    resumed = trainer.trainable_state()
    report["resume_bit_exact"] = (bool(straight) and straight.keys() == resumed.keys()
                                  and all(torch.equal(straight[k], resumed[k]) for k in straight)) if report["rank"] == 0 else None
    report["ema_bit_exact"] = all(torch.equal(a, local_tensor(b)) for a, b in zip(ema, trainer.ema.shadow_params)) if ema else None
    Path(out, f"rank-{report['rank']}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
