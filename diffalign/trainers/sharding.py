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
