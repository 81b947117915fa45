"""Sharded training with FSDP2 (``train.sharding: fsdp``): the denoiser's parameters, gradients and AdamW
moments divided across processes, one FSDP unit per transformer or UNet block.

Built on PyTorch's own ``torch.distributed.fsdp.fully_shard`` (FSDP2, per-parameter DTensor sharding
along dim 0): it runs under ``torchrun`` with gloo on CPU and NCCL on GPUs, the same code on both.
"""

from __future__ import annotations

from torch import nn

#: ModuleList attributes whose children are the blocks of the supported diffusers networks
#: (SD3/FLUX ``transformer_blocks`` and ``single_transformer_blocks``, Wan ``blocks``, UNet down/up blocks)
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "blocks", "down_blocks", "up_blocks")


def block_modules(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's blocks, each one FSDP unit (and one gradient-checkpointing unit in diffusers), by name."""
    found = []
    for attr in BLOCK_LISTS:
        blocks = getattr(network, attr, None)
        if isinstance(blocks, nn.ModuleList):
            found.extend((f"{attr}.{i}", block) for i, block in enumerate(blocks))
    mid = getattr(network, "mid_block", None)
    if isinstance(mid, nn.Module):
        found.append(("mid_block", mid))
    return found


def is_sharded(tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def full_tensor(tensor):
    """The whole tensor of a DTensor shard (a collective: every process must call it, in the same order);
    a plain tensor as it is."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def gathered(tensor):
    """The whole of a DTensor, as a CPU tensor on the main process and None on the others; a plain tensor as
    it is. A collective (every process calls it, in the same order); one parameter at a time, so no process
    ever holds more than one whole tensor on its device, and only the main process keeps a full copy (in
    host memory): what FSDP's ``full_state_dict`` with ``cpu_offload`` does."""
    if not is_sharded(tensor):
        return tensor
    import torch.distributed as dist

    full = tensor.full_tensor()
    return full.cpu() if dist.get_rank() == 0 else None


def local_tensor(tensor):
    """This process's shard of a DTensor (no communication); a plain tensor as it is."""
    return tensor.to_local() if is_sharded(tensor) else tensor


def shard_like(full, like):
    """``full`` cut the way ``like`` is sharded (a DTensor), or ``full`` itself when ``like`` is plain. Every
    process holds ``full`` (each read the same checkpoint), so no data moves (``src_data_rank=None``)."""
    if not is_sharded(like):
        return full.to(like.device)
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(like.to_local().device, like.dtype), like.device_mesh, like.placements, src_data_rank=None)


def refuse_accelerate_fsdp(accelerator=None) -> None:
    """accelerate's own FSDP (``accelerate launch --use_fsdp`` / an ``fsdp_config``) would wrap nothing here
    (the trainer never passes the model to ``prepare``), and on CPU accelerate drops it silently, so it is
    refused, naming the key that does shard. Called before accelerate builds its state (which, on CPU,
    fails on that config with a traceback of its own) and again by the trainer."""
    import os

    from ..errors import DiffalignError

    flag = os.environ.get("ACCELERATE_USE_FSDP", "").strip().lower() in ("1", "true", "yes")
    if flag or (accelerator is not None and getattr(accelerator.state, "fsdp_plugin", None) is not None):
        raise DiffalignError("accelerate's FSDP config (--use_fsdp / fsdp_config) is not used by diffalign; launch "
                             "without it and set train.sharding=fsdp (FSDP2, one unit per block; the README's Scaling out section)")


def shard_network(network: nn.Module, mesh, mixed_precision: str, offload: bool = False) -> None:
    """``fully_shard`` every block, then the network (its root parameters: embeddings, final layer).
    Under bf16/fp16 the gathered parameters and the computation use that dtype and gradients are
    reduced in fp32 (``MixedPrecisionPolicy``); the sharded master weights stay fp32. ``offload``: the
    shards live on the host and FSDP copies each unit's to the device for its all-gather
    (``CPUOffloadPolicy``; the frozen reference under ``train.offload: [reference]``)."""
    import torch
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    policy = MixedPrecisionPolicy()
    if mixed_precision in ("bf16", "fp16"):
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if mixed_precision == "bf16" else torch.float16,
                                      reduce_dtype=torch.float32)
    where = CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if offload else OffloadPolicy()
    for _, block in block_modules(network):
        fully_shard(block, mesh=mesh, mp_policy=policy, offload_policy=where)
    fully_shard(network, mesh=mesh, mp_policy=policy, offload_policy=where)


def shard_trainer(trainer) -> list:
    """Shard ``trainer``'s denoiser (and its frozen reference copy) across the processes; return the
    trainable parameters, now DTensor shards, in the order of ``trainer.params``."""
    from torch.distributed.device_mesh import init_device_mesh

    from ..errors import DiffalignError

    if trainer.trainable_module() is not trainer.model:
        raise DiffalignError(f"config key 'train.sharding' is 'fsdp', but method {trainer.name!r} trains a network of its "
                             "own, not the denoiser; valid choices for it: none")
    acc = trainer.accelerator
    ids = {id(p): name for name, p in trainer.model.named_parameters()}
    names = [ids[id(p)] for p in trainer.params]
    mesh = init_device_mesh(acc.device.type, (acc.num_processes,))
    precision = trainer.config.train.mixed_precision
    shard_network(trainer.network, mesh, precision)
    if trainer.reference is not None:
        shard_network(trainer.reference.network, mesh, precision, offload="reference" in trainer.config.train.offload)
    named = dict(trainer.model.named_parameters())
    return [named[name] for name in names]


def unsharded_copy(trainer):
    """A plain network on the CPU holding the gathered weights (every process calls this; only the main
    process gets the copy, the others None): what ``final/`` is written from, in diffusers format. The
    main process needs host memory for one full copy of the network."""

    from ..models.lora import add_lora

    network = trainer.network
    state = {name: gathered(value) for name, value in network.state_dict().items()}
    if not trainer.accelerator.is_main_process:
        return None
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(network).__mro__[1:] if c is not FSDPModule and not issubclass(c, FSDPModule))
    plain = cls.from_config(network.config)
    mc = trainer.config.model
    if not mc.full_finetune:
        add_lora(plain, mc.lora_rank, mc.lora_alpha, mc.lora_target_modules, trainer.config.seed)
    plain.load_state_dict({k: v.detach().to("cpu") for k, v in state.items()}, strict=True)
    return plain
