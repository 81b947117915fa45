"""CPU offload of the frozen reference and the EMA copy (``train.offload: [reference, ema]``).

Neither takes part in the backward pass, so neither needs to live on the accelerator between uses:

* **reference** (the frozen deep copy kept under full fine-tuning by Flow-DPO, GRPO with ``kl_coef > 0``...):
  unsharded, its transformer or UNet blocks are held on the host and each visits the device for its own
  forward (a pre-hook moves it there, a post-hook back), so the device holds the reference's root
  parameters (embeddings, final layer) and one block at a time. The reference pass runs while the policy's
  activations are held (Flow-DPO and GRPO call it after the policy), which is why it moves block by block
  and not whole. Sharded, FSDP2 keeps its shards on the host (``CPUOffloadPolicy``) and copies one unit's
  shard at a time to the device for its all-gather.
* **ema**: diffusers' ``EMAModel`` shadows are held on the host and visit the device whole for the update
  after each optimizer step (after the backward pass: no activations are held then), as diffusers'
  training scripts do with ``--offload_ema``: a host-device round trip of 4 bytes per trainable parameter
  per step.

The numbers are unchanged: the same fp32 arithmetic runs on the same device; only where the tensors wait
between uses differs. On a CPU-only machine the host is the device and offload moves nothing.
"""

from __future__ import annotations

import contextlib

import torch

from .config import OFFLOADABLE  # noqa: F401  (what train.offload may name)

HOST = torch.device("cpu")


def hold_blocks_on_host(network: torch.nn.Module, device) -> None:
    """Keep ``network``'s blocks (sharding.block_modules) on the host; each visits ``device`` for its own
    forward pass. For a frozen network used without gradients only (the post-hook moves the weights away
    as soon as the block has run, which a backward pass would still need)."""
    from .sharding import block_modules

    def visit(module, args):
        module.to(device)

    def leave(module, args, output):
        module.to(HOST)

    for _, block in block_modules(network):
        block.to(HOST)
        block.register_forward_pre_hook(visit)
        block.register_forward_hook(leave)


@contextlib.contextmanager
def on_device(holder, device, offloaded: bool):
    """``holder`` (a module, or diffusers' ``EMAModel``: anything with ``.to(device)``) on ``device`` for the
    block and back on the host after it, when ``offloaded``; untouched otherwise."""
    if not offloaded:
        yield holder
        return
    holder.to(device=device)
    try:
        yield holder
    finally:
        holder.to(device=HOST)
