"""The optimizer of a run (``train.optimizer``): PyTorch's AdamW, or bitsandbytes' 8-bit AdamW.

``adamw8bit`` is bitsandbytes' ``AdamW8bit`` (Dettmers et al. 2022, "8-bit Optimizers via Block-wise
Quantization", arXiv:2110.02861): each moment is stored as one uint8 per element, quantised block-wise
(blocks of 256 elements, one fp32 absmax per block, a 256-entry fp32 dynamic quantisation map per moment),
about 2 bytes per trainable parameter instead of AdamW's 8. Tensors under 4,096 elements keep fp32 moments
(bitsandbytes' ``min_8bit_size``), as do LoRA's small matrices on the embedded models. bitsandbytes 0.50
runs it on CUDA and on CPU (its CPU backend; checked here on CPU only). Not with ``train.sharding: fsdp``:
its kernels take whole tensors, not DTensor shards.
"""

from __future__ import annotations

import math

import torch

from ..errors import DiffalignError

#: bitsandbytes' defaults: tensors below ``MIN_8BIT_SIZE`` elements keep fp32 moments; block size; map entries
MIN_8BIT_SIZE = 4096
BLOCK = 256
QMAP_ENTRIES = 256


def build_optimizer(params, tc) -> torch.optim.Optimizer:
    """The optimizer ``tc`` (the train section) names, over ``params``."""
    kwargs = dict(lr=tc.learning_rate, betas=(tc.adam_beta1, tc.adam_beta2), eps=tc.adam_epsilon, weight_decay=tc.weight_decay)
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    try:
        import bitsandbytes
    except ImportError:
        raise DiffalignError("train.optimizer=adamw8bit needs bitsandbytes: pip install 'diffalign[bnb]' "
                             "(or use train.optimizer=adamw)") from None
    return bitsandbytes.optim.AdamW8bit(params, min_8bit_size=MIN_8BIT_SIZE, **kwargs)


def optimizer_state_bytes(shapes, kind: str) -> int:
    """Bytes of the optimizer state for trainable tensors of ``shapes`` (what the trainer's optimizer holds:
    tested against its tensors). AdamW: two fp32 moments and one 0-d fp32 ``step`` per tensor. AdamW8bit:
    two uint8 moments and two absmax vectors (one fp32 per block of 256) per tensor of at least 4,096
    elements, plus two 256-entry fp32 quantisation maps shared by all of them; two fp32 moments for smaller
    tensors (its ``step`` is a Python int)."""
    total, quantised = 0, False
    for shape in shapes:
        n = math.prod(shape)
        if kind == "adamw":
            total += 2 * 4 * n + 4
        elif n >= MIN_8BIT_SIZE:
            total += 2 * n + 2 * 4 * math.ceil(n / BLOCK)
            quantised = True
        else:
            total += 2 * 4 * n
    return total + (2 * 4 * QMAP_ENTRIES if quantised else 0)
